from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.errors import Conflict, InvalidInput
from casemgr.schools.models import School, SchoolClass

SCHOOL_YEAR = re.compile(r"^(\d{4})-(\d{4})$")


def check_school_year(value: str) -> str:
    match = SCHOOL_YEAR.match(value)
    if not match or int(match.group(2)) != int(match.group(1)) + 1:
        raise InvalidInput.field("school_year", "write it as YYYY-YYYY, e.g. 2026-2027")
    return value


async def add_school(
    session: AsyncSession, *, name: str, code: str, actor: audit.Actor | None = None
) -> School:
    name, code = name.strip(), code.strip()
    errors = []
    if not name or len(name) > 200:
        errors.append({"field": "name", "message": "1-200 characters"})
    if not code or len(code) > 32:
        errors.append({"field": "code", "message": "1-32 characters"})
    if errors:
        raise InvalidInput(errors)
    if await session.scalar(select(School.id).where(School.code == code)) is not None:
        raise Conflict("A school with that code exists.")
    school = School(name=name, code=code)
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
    if await session.get(School, school_id) is None:
        raise InvalidInput.field("school_id", "no such school")
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
