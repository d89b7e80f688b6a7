"""Home visits (家访) and the yearly visit requirements of a school.

A visit may be recorded for ANY student the caller reaches with ``home_visit:write``: a
class teacher visits every family, so a visit says nothing about care status and never
opens, links or reveals a case file. Progress is shown as counts only.

Who a visit counts for: its author and every participant. A class teacher's progress is
over the students of their classes (the school's ``class_teacher_visits`` per student);
a mentor's over their paired students (``mentor_visits`` per student).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.accounts.models import ClassAssignment
from casemgr.authz import Permission
from casemgr.care.models import HomeVisit, VisitRequirement
from casemgr.care.schemas import (
    HomeVisitIn,
    HomeVisitOut,
    VisitProgress,
    VisitProgressItem,
    VisitRequirementIn,
    VisitRequirementOut,
)
from casemgr.care.services import (
    STAFF_ROLES,
    SchoolYears,
    StudentKeys,
    home_visit_out,
    new_home_visit,
    not_after_today,
    required_text,
    staff_of_school,
    with_live_key,
)
from casemgr.context import RequestContext
from casemgr.crypto.models import DataKey
from casemgr.errors import InvalidInput
from casemgr.schools.models import School, SchoolClass
from casemgr.schoolyear import current_school_year, is_school_year
from casemgr.students.models import Student

# What a school expects when its leader has set nothing for the year (the model's defaults).
DEFAULT_CLASS_TEACHER_VISITS = 1
DEFAULT_MENTOR_VISITS = 1


@dataclass(frozen=True)
class Requirement:
    class_teacher_visits: int
    mentor_visits: int


async def requirement(session: AsyncSession, school_id: uuid.UUID, school_year: str) -> Requirement:
    row = await session.get(VisitRequirement, (school_id, school_year))
    if row is None:
        return Requirement(DEFAULT_CLASS_TEACHER_VISITS, DEFAULT_MENTOR_VISITS)
    return Requirement(row.class_teacher_visits, row.mentor_visits)


async def add_home_visit(
    ctx: RequestContext, student_id: uuid.UUID, data: HomeVisitIn
) -> HomeVisit:
    access = await ctx.student(Permission.HOME_VISIT_WRITE, student_id, resource_type="home_visit")
    notes = required_text("notes", data.notes)
    not_after_today("visited_on", data.visited_on)
    participants = list(dict.fromkeys(data.participant_ids))
    found = await staff_of_school(ctx.session, access.school_id, participants, STAFF_ROLES)
    if found != set(participants):
        # One answer whether an id is unknown or belongs to another school.
        raise InvalidInput.field(
            "participant_ids", "each participant must be an active staff member of the school"
        )
    visit = new_home_visit(
        access.cipher,
        student_id=access.id,
        author_id=ctx.principal.user_id,
        school_year=await current_school_year(ctx.session, access.school_id),
        visited_on=data.visited_on,
        mode=data.mode,
        notes=notes,
        participant_ids=participants,
    )
    ctx.session.add(visit)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.HOME_VISIT_WRITE,
        resource_type="home_visit",
        resource_id=visit.id,
        access=access,
    )
    return visit


async def list_home_visits(
    ctx: RequestContext, student_id: uuid.UUID, *, include_earlier: bool = False
) -> list[HomeVisitOut]:
    access = await ctx.student(Permission.HOME_VISIT_READ, student_id, resource_type="home_visit")
    query = select(HomeVisit).where(HomeVisit.student_id == access.id)
    if not include_earlier:
        query = query.where(
            HomeVisit.school_year == await current_school_year(ctx.session, access.school_id)
        )
    items = sorted(
        (home_visit_out(access.cipher, v) for v in await ctx.session.scalars(query)),
        key=lambda v: v.visited_on,
        reverse=True,
    )
    await ctx.audit(
        audit.Action.CASE_READ_EARLIER if include_earlier else audit.Action.HOME_VISIT_READ,
        resource_type="home_visit",
        access=access,
        detail={"count": len(items)},
    )
    return items


# -- requirements ---------------------------------------------------------------------------


async def _school_decision(ctx: RequestContext, perm: Permission, school_id: uuid.UUID) -> None:
    school = await ctx.session.get(School, school_id)
    await ctx.require(
        perm,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        exists=school is not None,
    )


async def set_visit_requirement(
    ctx: RequestContext, school_id: uuid.UUID, data: VisitRequirementIn
) -> VisitRequirementOut:
    await _school_decision(ctx, Permission.VISIT_REQUIREMENT_MANAGE, school_id)
    current = await current_school_year(ctx.session, school_id)
    year = data.school_year or current
    if not is_school_year(year):
        raise InvalidInput.field("school_year", "must look like 2026-2027")
    if year < current:
        raise InvalidInput.field("school_year", "must not be before the current school year")
    row = await ctx.session.get(VisitRequirement, (school_id, year))
    if row is None:
        row = VisitRequirement(school_id=school_id, school_year=year)
        ctx.session.add(row)
    row.class_teacher_visits = data.class_teacher_visits
    row.mentor_visits = data.mentor_visits
    row.updated_by = ctx.principal.user_id
    row.updated_at = clock.now()
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.VISIT_REQUIREMENT_SET,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        detail={
            "school_year": year,
            "class_teacher_visits": data.class_teacher_visits,
            "mentor_visits": data.mentor_visits,
        },
    )
    return VisitRequirementOut(school_id, year, data.class_teacher_visits, data.mentor_visits)


async def get_visit_requirement(
    ctx: RequestContext, school_id: uuid.UUID, school_year: str | None = None
) -> VisitRequirementOut:
    await _school_decision(ctx, Permission.VISIT_REQUIREMENT_MANAGE, school_id)
    year = school_year or await current_school_year(ctx.session, school_id)
    if not is_school_year(year):
        raise InvalidInput.field("school_year", "must look like 2026-2027")
    found = await requirement(ctx.session, school_id, year)
    await ctx.audit(
        audit.Action.VISIT_REQUIREMENT_READ,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
    )
    return VisitRequirementOut(school_id, year, found.class_teacher_visits, found.mentor_visits)


# -- counting -------------------------------------------------------------------------------


async def visits_by(
    ctx: RequestContext,
    students: dict[uuid.UUID, tuple[uuid.UUID, int | None, bytes | None]],
    school_years: dict[uuid.UUID, str],
    staff: Iterable[uuid.UUID],
) -> dict[uuid.UUID, Counter[uuid.UUID]]:
    """For each student, how many of this school year's visits count for each of ``staff``.

    ``students`` maps a student to its (data key id, KEK version, wrapped key) and
    ``school_years`` to its school's current year. A visit counts for its author without
    decryption; for participants, the sealed participant list is opened (the caller has
    decided each student before asking).
    """
    wanted = set(staff)
    counts: dict[uuid.UUID, Counter[uuid.UUID]] = {s: Counter() for s in students}
    if not students or not wanted:
        return counts
    keys = StudentKeys(ctx.crypto)
    for visit in await ctx.session.scalars(
        select(HomeVisit).where(
            HomeVisit.student_id.in_(list(students)),
            HomeVisit.school_year.in_(set(school_years.values())),
        )
    ):
        if visit.school_year != school_years[visit.student_id]:
            continue
        counted = {visit.author_id} & wanted if visit.author_id is not None else set()
        if wanted - counted:
            cipher = keys.cipher(*students[visit.student_id])
            counted |= set(cipher.open_field(visit, "participant_ids")) & wanted
        for user_id in counted:
            counts[visit.student_id][user_id] += 1
    return counts


@dataclass
class Duty:
    """One visiting duty of a teacher: a student, the visits required, those made."""

    student_id: uuid.UUID
    school_id: uuid.UUID
    scope: str  # "class" or "paired"
    class_id: uuid.UUID | None
    required: int
    made: int

    @property
    def remaining(self) -> int:
        return max(self.required - self.made, 0)


async def my_visit_duties(ctx: RequestContext) -> tuple[list[Duty], dict[uuid.UUID, str]]:
    """The caller's visiting duties this school year: the students of their classes (as
    class teacher) and their paired students (as mentor), with the visits made.

    Returns the duties and each school's current year.
    """
    principal = ctx.principal
    years = SchoolYears(ctx.session)
    rows = []
    if principal.class_ids or principal.paired_student_ids:
        query = with_live_key(
            select(
                Student.id,
                Student.school_id,
                Student.class_id,
                Student.data_key_id,
                DataKey.kek_version,
                DataKey.wrapped,
                SchoolClass.school_year,
            ).join(SchoolClass, SchoolClass.id == Student.class_id)
        ).where(
            Student.enrolment == "enrolled",
            (Student.class_id.in_(principal.class_ids))
            | (Student.id.in_(principal.paired_student_ids)),
        )
        rows = list((await ctx.session.execute(query)).all())
    students: dict[uuid.UUID, tuple[uuid.UUID, int | None, bytes | None]] = {}
    school_years: dict[uuid.UUID, str] = {}
    candidates: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, str]] = []
    for student_id, school_id, class_id, key_id, version, wrapped, class_year in rows:
        year = await years.of(school_id)
        decision = ctx.decide(
            Permission.HOME_VISIT_WRITE,
            school_id=school_id,
            class_id=class_id,
            student_id=student_id,
        )
        if not decision.allowed or decision.emergency:
            continue
        students[student_id] = (key_id, version, wrapped)
        school_years[student_id] = year
        if class_id in principal.class_ids and class_year == year:
            candidates.append((student_id, school_id, class_id, "class"))
        if student_id in principal.paired_student_ids:
            candidates.append((student_id, school_id, class_id, "paired"))
    counts = await visits_by(ctx, students, school_years, [principal.user_id])
    requirements: dict[tuple[uuid.UUID, str], Requirement] = {}
    duties = []
    for student_id, school_id, class_id, scope in candidates:
        year = school_years[student_id]
        if (school_id, year) not in requirements:
            requirements[(school_id, year)] = await requirement(ctx.session, school_id, year)
        needed = requirements[(school_id, year)]
        duties.append(
            Duty(
                student_id=student_id,
                school_id=school_id,
                scope=scope,
                class_id=class_id if scope == "class" else None,
                required=needed.class_teacher_visits if scope == "class" else needed.mentor_visits,
                made=counts[student_id][principal.user_id],
            )
        )
    return duties, years.years


async def my_visit_progress(ctx: RequestContext) -> VisitProgress:
    if not ctx.may_ever(Permission.VISIT_PROGRESS_READ):
        await ctx.require(Permission.VISIT_PROGRESS_READ, resource_type="visit_progress")
    duties, years = await my_visit_duties(ctx)
    groups: dict[tuple[str, uuid.UUID | None], list[Duty]] = {}
    for duty in duties:
        groups.setdefault((duty.scope, duty.class_id), []).append(duty)
    names: dict[uuid.UUID, str] = {}
    class_ids = [class_id for scope, class_id in groups if class_id is not None]
    if class_ids:
        for class_id, name in await ctx.session.execute(
            select(SchoolClass.id, SchoolClass.name).where(SchoolClass.id.in_(class_ids))
        ):
            names[class_id] = name
    items = [
        VisitProgressItem(
            scope="class" if scope == "class" else "paired",
            class_id=class_id,
            class_name=names.get(class_id) if class_id else None,
            required_per_student=max((d.required for d in group), default=0),
            students=len(group),
            students_done=sum(1 for d in group if d.remaining == 0),
            visits=sum(d.made for d in group),
        )
        for (scope, class_id), group in sorted(
            groups.items(), key=lambda g: (g[0][0], names.get(g[0][1]) if g[0][1] else "")
        )
    ]
    await ctx.audit(
        audit.Action.VISIT_PROGRESS_READ,
        resource_type="visit_progress",
        detail={"items": len(items)},
    )
    only_year = set(years.values())
    return VisitProgress(school_year=only_year.pop() if len(only_year) == 1 else None, items=items)


async def school_visit_progress(ctx: RequestContext, school_id: uuid.UUID) -> VisitProgress:
    """Per class of the current year: how far its class teachers are with their visits.

    Counts only, and only the class teachers' duty (every family), so nothing here tells
    which students are paired or have a file. Participant lists are opened to count who
    took part, never shown: the leader holds no ``home_visit:read``.
    """
    await _school_decision(ctx, Permission.VISIT_PROGRESS_READ, school_id)
    year = await current_school_year(ctx.session, school_id)
    needed = await requirement(ctx.session, school_id, year)
    classes = list(
        await ctx.session.scalars(
            select(SchoolClass)
            .where(SchoolClass.school_id == school_id, SchoolClass.school_year == year)
            .order_by(SchoolClass.grade, SchoolClass.name)
        )
    )
    class_ids = [c.id for c in classes]
    teachers: dict[uuid.UUID, set[uuid.UUID]] = {c: set() for c in class_ids}
    rows = []
    if class_ids:
        for user_id, class_id in await ctx.session.execute(
            select(ClassAssignment.user_id, ClassAssignment.class_id).where(
                ClassAssignment.class_id.in_(class_ids)
            )
        ):
            teachers[class_id].add(user_id)
        rows = list(
            (
                await ctx.session.execute(
                    with_live_key(
                        select(
                            Student.id,
                            Student.class_id,
                            Student.data_key_id,
                            DataKey.kek_version,
                            DataKey.wrapped,
                        )
                    ).where(Student.class_id.in_(class_ids), Student.enrolment == "enrolled")
                )
            ).all()
        )
    students: dict[uuid.UUID, tuple[uuid.UUID, int | None, bytes | None]] = {}
    class_of: dict[uuid.UUID, uuid.UUID] = {}
    for student_id, class_id, key_id, version, wrapped in rows:
        students[student_id] = (key_id, version, wrapped)
        class_of[student_id] = class_id
    all_teachers = set().union(*teachers.values()) if teachers else set()
    counts = await visits_by(ctx, students, dict.fromkeys(students, year), all_teachers)
    items = []
    for school_class in classes:
        members = [s for s, c in class_of.items() if c == school_class.id]
        own = teachers[school_class.id]
        made = {s: sum(counts[s][t] for t in own) for s in members}
        items.append(
            VisitProgressItem(
                scope="class",
                class_id=school_class.id,
                class_name=school_class.name,
                required_per_student=needed.class_teacher_visits,
                students=len(members),
                students_done=sum(1 for s in members if made[s] >= needed.class_teacher_visits),
                visits=sum(made.values()),
            )
        )
    await ctx.audit(
        audit.Action.VISIT_PROGRESS_READ,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        detail={"classes": len(items)},
    )
    return VisitProgress(school_year=year, items=items)
