"""Schools and classes: created by the CLI and the API, listed within the caller's reach."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.authz import Permission
from casemgr.context import RequestContext
from casemgr.errors import Conflict, InvalidInput
from casemgr.schools.models import School, SchoolClass
from casemgr.schoolyear import current_school_year

SCHOOL_YEAR = re.compile(r"^(\d{4})-(\d{4})$")
# SPEC §6: the grades a school of each stage teaches; the last one leaves at the rollover.
STAGES: dict[str, range] = {
    "primary": range(1, 7),
    "junior": range(7, 10),
    "senior": range(10, 13),
    "nine_year": range(1, 10),
    "complete": range(7, 13),
}
GRADES = range(1, 13)


def check_school_year(value: str, field: str = "school_year") -> str:
    match = SCHOOL_YEAR.match(value)
    if not match or int(match.group(2)) != int(match.group(1)) + 1:
        raise InvalidInput.field(field, "write it as YYYY-YYYY, e.g. 2026-2027")
    return value


def grades_of(stage: str | None) -> range:
    return STAGES[stage] if stage else GRADES


async def add_school(
    session: AsyncSession,
    *,
    name: str,
    code: str,
    stage: str | None = None,
    actor: audit.Actor | None = None,
) -> School:
    name, code = name.strip(), code.strip()
    errors = []
    if not name or len(name) > 200:
        errors.append({"field": "name", "message": "1-200 characters"})
    if not code or len(code) > 32:
        errors.append({"field": "code", "message": "1-32 characters"})
    if stage is not None and stage not in STAGES:
        errors.append({"field": "stage", "message": f"one of {', '.join(STAGES)}"})
    if errors:
        raise InvalidInput(errors)
    if await session.scalar(select(School.id).where(School.code == code)) is not None:
        raise Conflict("A school with that code exists.")
    school = School(name=name, code=code, stage=stage)
    session.add(school)
    await session.flush()
    await audit.record(
        session,
        audit.Action.SCHOOL_CREATE,
        actor=actor,
        resource_type="school",
        resource_id=school.id,
        school_id=school.id,
    )
    return school


async def add_class(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    name: str,
    grade: int,
    school_year: str,
    actor: audit.Actor | None = None,
) -> SchoolClass:
    name = name.strip()
    errors = []
    if not name or len(name) > 100:
        errors.append({"field": "name", "message": "1-100 characters"})
    if not 1 <= grade <= 12:
        errors.append({"field": "grade", "message": "a grade from 1 to 12"})
    try:
        check_school_year(school_year)
    except InvalidInput as exc:
        errors.extend(exc.extra["errors"])
    if errors:
        raise InvalidInput(errors)
    school = await session.get(School, school_id)
    if school is None:
        raise InvalidInput.field("school_id", "no such school")
    if grade not in grades_of(school.stage):
        allowed = grades_of(school.stage)
        raise InvalidInput.field(
            "grade", f"this school teaches grades {allowed.start} to {allowed.stop - 1}"
        )
    duplicate = await session.scalar(
        select(SchoolClass.id).where(
            SchoolClass.school_id == school_id,
            SchoolClass.school_year == school_year,
            SchoolClass.name == name,
        )
    )
    if duplicate is not None:
        raise Conflict("That class exists in this school year.")
    school_class = SchoolClass(school_id=school_id, name=name, grade=grade, school_year=school_year)
    session.add(school_class)
    await session.flush()
    await audit.record(
        session,
        audit.Action.CLASS_CREATE,
        actor=actor,
        resource_type="class",
        resource_id=school_class.id,
        school_id=school_id,
    )
    return school_class


# -- the API's side: the same services behind an authorization decision ------------------


@dataclass(frozen=True)
class SchoolOut:
    id: uuid.UUID
    name: str
    code: str
    stage: str | None
    school_year: str


@dataclass(frozen=True)
class ClassOut:
    id: uuid.UUID
    name: str
    grade: int
    school_year: str
    school_id: uuid.UUID


def class_out(school_class: SchoolClass) -> ClassOut:
    return ClassOut(
        id=school_class.id,
        name=school_class.name,
        grade=school_class.grade,
        school_year=school_class.school_year,
        school_id=school_class.school_id,
    )


async def create_school(ctx: RequestContext, *, name: str, code: str, stage: str | None) -> School:
    decision = await ctx.require(Permission.SCHOOL_MANAGE, resource_type="school")
    return await add_school(
        ctx.session, name=name, code=code, stage=stage, actor=ctx.actor(decision)
    )


async def create_class(
    ctx: RequestContext, school_id: uuid.UUID, *, name: str, grade: int, school_year: str
) -> SchoolClass:
    school = await ctx.session.get(School, school_id)
    decision = await ctx.require(
        Permission.CLASS_MANAGE,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        exists=school is not None,
    )
    return await add_class(
        ctx.session,
        school_id=school_id,
        name=name,
        grade=grade,
        school_year=school_year,
        actor=ctx.actor(decision, school_id),
    )


async def _current_years(
    session: AsyncSession, school_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    rows = await session.execute(
        select(SchoolClass.school_id, func.max(SchoolClass.school_year))
        .where(SchoolClass.school_id.in_(school_ids))
        .group_by(SchoolClass.school_id)
    )
    return {school_id: year for school_id, year in rows}


async def schools_within_reach(ctx: RequestContext) -> list[SchoolOut]:
    """The schools the caller works in (a bureau admin: every school); auditors: 403."""
    if not ctx.may_ever(Permission.SCHOOL_READ):
        await ctx.require(Permission.SCHOOL_READ, resource_type="school")
    reach = ctx.authorizer.schools_holding(ctx.principal, Permission.SCHOOL_READ)
    query = select(School).order_by(School.name, School.code)
    if reach is not None:
        query = query.where(School.id.in_(reach))
    schools = list(await ctx.session.scalars(query))
    years = await _current_years(ctx.session, [s.id for s in schools])
    from casemgr.schoolyear import calendar_school_year

    return [
        SchoolOut(s.id, s.name, s.code, s.stage, years.get(s.id) or calendar_school_year())
        for s in schools
    ]


async def classes_within_reach(
    ctx: RequestContext, school_id: uuid.UUID, school_year: str | None = None
) -> list[ClassOut]:
    """A school's classes of one school year (default: the school's current one).

    Every staff member of the school sees the names and grades of its classes; what is in
    a class (its roster) stays behind the roster's own reach.
    """
    school = await ctx.session.get(School, school_id)
    reach = ctx.authorizer.schools_holding(ctx.principal, Permission.CLASS_READ)
    if school is None or (reach is not None and school_id not in reach):
        await ctx.require(
            Permission.CLASS_READ,
            resource_type="school",
            resource_id=school_id,
            school_id=school_id,
            exists=False,
        )
    if school_year is not None:
        check_school_year(school_year)
    year = school_year or await current_school_year(ctx.session, school_id)
    classes = await ctx.session.scalars(
        select(SchoolClass)
        .where(SchoolClass.school_id == school_id, SchoolClass.school_year == year)
        .order_by(SchoolClass.grade, SchoolClass.name)
    )
    return [class_out(c) for c in classes]
