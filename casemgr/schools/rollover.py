"""The school-year rollover: every class moves up a grade, the top grade leaves.

For a school going from ``from`` (say 2026-2027) to ``to`` (2027-2028):

- each class of ``from`` below the top grade gets a successor in ``to``, one grade up,
  linked by ``previous_class_id`` (the name's grade is rewritten where it names one:
  七年级1班 → 八年级1班, 初一(2)班 → 初二(2)班, "Grade 7 A" → "Grade 8 A"); a class the leader
  made in ``to`` beforehand with that name and grade is adopted as the successor;
- its enrolled students move to the successor, and so do its class teachers, unless the
  successor has class teachers of its own already (it was reassigned);
- the top grade (from ``School.stage``; without one, the highest grade among the school's
  classes) leaves: its students get ``enrolment = "left"`` and ``left_on`` = the first day
  of ``to`` (the retention clock starts), their open case files close with the reason
  ``left_school`` and their pairings end (``casemgr.care.lifecycle``); the class's teacher
  assignments end with it.

A dry run changes nothing and returns the plan. Everything runs in one transaction, and a
class already carried forward (it has a successor) is not carried again, so running the
rollover twice is harmless. The plan and the result hold counts and class names, never a
student and never anything about care.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.accounts.models import ClassAssignment
from casemgr.care import lifecycle
from casemgr.crypto import Crypto
from casemgr.errors import Conflict, InvalidInput
from casemgr.schools.models import School, SchoolClass
from casemgr.schools.services import STAGES, check_school_year
from casemgr.schoolyear import current_school_year, first_day, next_school_year
from casemgr.students.models import Student

ENROLLED = "enrolled"
LEFT = "left"
VIA = "school_year:rollover"
_CN = ["", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二"]
_CN_DIGITS = "一二三四五六七八九十"


def previous_school_year(value: str) -> str:
    start = int(value[:4]) - 1
    return f"{start}-{start + 1}"


def next_class_name(name: str, grade: int) -> str:
    """The class's name one grade up, where the name says its grade; else the same name."""
    new = grade + 1
    rules = [
        (rf"(?<![{_CN_DIGITS}]){_CN[grade]}年级", f"{_CN[new]}年级"),
        (rf"(?<!\d){grade}年级", f"{new}年级"),
        (rf"(?i)\b(grade\s*){grade}\b", rf"\g<1>{new}"),
    ]
    if 7 <= grade <= 8:
        rules.append((f"初{_CN[grade - 6]}", f"初{_CN[new - 6]}"))
    if 10 <= grade <= 11:
        rules.append((f"高{_CN[grade - 9]}", f"高{_CN[new - 9]}"))
    for pattern, replacement in rules:
        if len(re.findall(pattern, name)) == 1:
            return re.sub(pattern, replacement, name)
    return name


@dataclass
class ClassStep:
    class_id: uuid.UUID
    name: str
    grade: int
    students: int
    class_teachers: int
    action: str  # "move_up" or "leave"
    to_class_id: uuid.UUID | None = None
    to_name: str | None = None
    to_grade: int | None = None
    # "create", "adopt" (a class made beforehand) or "done" (carried forward already)
    successor: str | None = None


@dataclass
class RolloverPlan:
    school_id: uuid.UUID
    from_school_year: str
    to_school_year: str
    top_grade: int
    dry_run: bool
    classes: list[ClassStep] = field(default_factory=list)
    students_moved: int = 0
    students_left: int = 0
    classes_created: int = 0


async def _top_grade(session: AsyncSession, school: School) -> int:
    if school.stage:
        return STAGES[school.stage].stop - 1
    highest = await session.scalar(
        select(func.max(SchoolClass.grade)).where(SchoolClass.school_id == school.id)
    )
    return int(highest or 12)


async def _counts(
    session: AsyncSession, column: Any, key: Any, ids: list[uuid.UUID], *where: Any
) -> dict[uuid.UUID, int]:
    if not ids:
        return {}
    rows = await session.execute(
        select(key, func.count(column)).where(key.in_(ids), *where).group_by(key)
    )
    return {k: int(n) for k, n in rows}


async def plan_rollover(
    session: AsyncSession, school: School, to_school_year: str, *, dry_run: bool
) -> RolloverPlan:
    check_school_year(to_school_year, "to_school_year")
    current = await current_school_year(session, school.id)
    from_year = previous_school_year(to_school_year)
    if to_school_year not in (current, next_school_year(current)):
        raise InvalidInput.field(
            "to_school_year",
            f"the school is in {current}: roll over to {next_school_year(current)}",
        )
    sources = list(
        await session.scalars(
            select(SchoolClass)
            .where(SchoolClass.school_id == school.id, SchoolClass.school_year == from_year)
            .order_by(SchoolClass.grade, SchoolClass.name)
        )
    )
    if not sources:
        raise InvalidInput.field("to_school_year", f"the school has no classes in {from_year}")
    targets = list(
        await session.scalars(
            select(SchoolClass).where(
                SchoolClass.school_id == school.id, SchoolClass.school_year == to_school_year
            )
        )
    )
    successors = {c.previous_class_id: c for c in targets if c.previous_class_id is not None}
    by_name = {c.name: c for c in targets}
    ids = [c.id for c in sources]
    students = await _counts(
        session, Student.id, Student.class_id, ids, Student.enrolment == ENROLLED
    )
    teachers = await _counts(session, ClassAssignment.user_id, ClassAssignment.class_id, ids)
    top = await _top_grade(session, school)
    plan = RolloverPlan(school.id, from_year, to_school_year, top, dry_run)
    conflicts = []
    for source in sources:
        step = ClassStep(
            class_id=source.id,
            name=source.name,
            grade=source.grade,
            students=students.get(source.id, 0),
            class_teachers=teachers.get(source.id, 0),
            action="leave" if source.grade >= top else "move_up",
        )
        plan.classes.append(step)
        if step.action == "leave":
            plan.students_left += step.students
            continue
        plan.students_moved += step.students
        successor = successors.get(source.id)
        if successor is not None:
            step.to_class_id, step.to_name, step.to_grade = (
                successor.id,
                successor.name,
                successor.grade,
            )
            step.successor = "done"
            continue
        step.to_name, step.to_grade = next_class_name(source.name, source.grade), source.grade + 1
        taken = by_name.get(step.to_name)
        if taken is None:
            step.successor = "create"
        elif taken.previous_class_id is None and taken.grade == step.to_grade:
            step.to_class_id, step.successor = taken.id, "adopt"
        else:
            conflicts.append(step.to_name)
    if conflicts:
        raise Conflict(
            f"Classes of {to_school_year} already use the names the rollover needs;"
            " rename them first.",
            classes=conflicts,
        )
    plan.classes_created = sum(1 for step in plan.classes if step.successor == "create")
    return plan


async def rollover(
    session: AsyncSession,
    crypto: Crypto,
    school_id: uuid.UUID,
    to_school_year: str,
    *,
    dry_run: bool = False,
    actor: audit.Actor | None = None,
) -> RolloverPlan:
    """Plan (``dry_run``) or carry out the rollover of one school (see the module doc)."""
    query = select(School).where(School.id == school_id)
    school = await session.scalar(query if dry_run else query.with_for_update())
    if school is None:
        raise InvalidInput.field("school_id", "no such school")
    plan = await plan_rollover(session, school, to_school_year, dry_run=dry_run)
    if dry_run:
        return plan
    left_on = first_day(to_school_year)
    for step in plan.classes:
        if step.action == "leave":
            await _leave(session, crypto, school_id, step, left_on, actor)
            continue
        if step.successor == "create":
            created = SchoolClass(
                school_id=school_id,
                name=step.to_name,
                grade=step.to_grade,
                school_year=to_school_year,
                previous_class_id=step.class_id,
            )
            session.add(created)
            await session.flush()
            step.to_class_id = created.id
            await audit.record(
                session,
                audit.Action.CLASS_CREATE,
                actor=actor,
                resource_type="class",
                resource_id=created.id,
                school_id=school_id,
                detail={"via": VIA},
            )
        elif step.successor == "adopt":
            await session.execute(
                update(SchoolClass)
                .where(SchoolClass.id == step.to_class_id)
                .values(previous_class_id=step.class_id)
                .execution_options(synchronize_session=False)
            )
        await session.execute(
            update(Student)
            .where(Student.class_id == step.class_id, Student.enrolment == ENROLLED)
            .values(class_id=step.to_class_id)
            .execution_options(synchronize_session=False)
        )
        reassigned = await session.scalar(
            select(func.count())
            .select_from(ClassAssignment)
            .where(ClassAssignment.class_id == step.to_class_id)
        )
        if not reassigned:
            await session.execute(
                update(ClassAssignment)
                .where(ClassAssignment.class_id == step.class_id)
                .values(class_id=step.to_class_id)
                .execution_options(synchronize_session=False)
            )
    await audit.record(
        session,
        audit.Action.SCHOOL_YEAR_ROLLOVER,
        actor=actor,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        detail={
            "to": to_school_year,
            "students_moved": plan.students_moved,
            "students_left": plan.students_left,
            "classes_created": plan.classes_created,
        },
    )
    return plan


async def _leave(
    session: AsyncSession,
    crypto: Crypto,
    school_id: uuid.UUID,
    step: ClassStep,
    left_on: date,
    actor: audit.Actor | None,
) -> None:
    leaving = list(
        await session.scalars(
            select(Student)
            .where(Student.class_id == step.class_id, Student.enrolment == ENROLLED)
            .with_for_update()
        )
    )
    ciphers = await crypto.ciphers(session, [s.data_key_id for s in leaving])
    for student in leaving:
        student.enrolment = LEFT
        student.left_on = left_on
        cipher = ciphers.get(student.data_key_id)
        if cipher is not None:  # an erased student has nothing left to close
            await lifecycle.student_left(
                session,
                cipher,
                student.id,
                on=clock.today(),
                actor=actor,
                school_id=school_id,
                via=VIA,
            )
        await audit.record(
            session,
            audit.Action.STUDENT_LEAVE,
            actor=actor,
            resource_type="student",
            resource_id=student.id,
            student_id=student.id,
            school_id=school_id,
            detail={"via": VIA},
        )
    await session.execute(
        delete(ClassAssignment)
        .where(ClassAssignment.class_id == step.class_id)
        .execution_options(synchronize_session=False)
    )
