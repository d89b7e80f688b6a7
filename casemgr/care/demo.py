"""Care programme data for ``casemgr demo``: a living synthetic county.

Called by ``casemgr.demo.seed`` after it created the demo school and its logins. Adds
three more schools with classes, staff and students (every name visibly made up), then,
in every school, care categories, case files, pairings (the demo teacher is a mentor of
several students), support logs with follow-ups, home visits, counselor guidance, an
explicit task, yearly visit requirements and one emergency access waiting for review,
spread over this school year and the one before so that the clean slate shows.

Everything is sealed through the same builders the services use. Only the schools'
staff outside the demo logins are written directly: they share one hash of a random
password nobody is told, so they cannot log in.
"""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.accounts import passwords
from casemgr.accounts.models import ClassAssignment, RoleGrant, User
from casemgr.authz import Role
from casemgr.care.emergency import SYSTEM_KEY as EMERGENCY_KEY
from casemgr.care.models import EmergencyGrant, Task, VisitRequirement
from casemgr.care.services import (
    CASE_REVIEW_DAYS,
    close_case_file,
    new_case_code,
    new_case_file,
    new_category,
    new_guidance,
    new_home_visit,
    new_pairing,
    new_support_log,
)
from casemgr.crypto import Crypto, FieldCipher
from casemgr.schools.models import SchoolClass
from casemgr.schools.services import add_class, add_school
from casemgr.schoolyear import first_day
from casemgr.students.models import Student
from casemgr.students.schemas import GuardianIn, StudentIn
from casemgr.students.services import insert_student

SCHOOLS = (
    ("示例第二中学（演示）", "DEMO-002"),
    ("示例东城小学（演示）", "DEMO-003"),
    ("示例西山九年制学校（演示）", "DEMO-004"),
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁宋郑谢韩唐冯于董萧"
GIVEN = (
    "佳怡",
    "子轩",
    "一诺",
    "浩宇",
    "欣然",
    "梓涵",
    "俊熙",
    "思琪",
    "雨泽",
    "若曦",
    "宇轩",
    "可欣",
    "明哲",
    "语桐",
    "天佑",
    "书瑶",
)
DETAILS = {
    "orphan": "Lives with the grandparents; a guardian is named by the village committee.",
    "single_parent": "Lives with the mother; the father works in another province.",
    "disability": "Hearing aid on the left ear; sits in the front row.",
    "financial_hardship": "Family holds a minimum-living-allowance certificate.",
    "left_behind": "Both parents work in the city; lives with an aunt.",
}
LOG_NOTES = {
    "conversation": "Talked after class about the week; in good spirits.",
    "academic": "Went through the maths homework together; fractions are improving.",
    "material": "Handed over a winter coat and stationery from the school fund.",
    "psychological": "Spoke about friendships; suggested joining the reading club.",
    "family_contact": "Called the guardian about the coming parents' meeting.",
    "other": "Helped with the library card application.",
}
GOALS = (
    "Read together twice a week; homework check on Fridays.",
    "Regular talks; encourage joining a school club.",
    "Maths support; monthly call with the guardian.",
)
PLANS = (
    "Mentor meets the student weekly; class teacher calls home monthly; review each term.",
    "Study support in the library after school; free lunch arranged; review in spring.",
)
GUIDANCE = (
    "Give calm, specific praise; avoid comments in front of the class about home.",
    "If the student seems withdrawn, a short private check-in is better than a question"
    " in class. Tell the counselor about any sudden change.",
)
VISIT_NOTES = (
    "Met the guardian at home; talked about routines and homework time.",
    "Phone call with the mother; she asked about the school lunch scheme.",
    "Video call with both parents working away; the grandmother joined.",
)


@dataclass
class SchoolStaff:
    school_id: uuid.UUID
    class_teachers: dict[uuid.UUID, uuid.UUID]  # class -> teacher
    mentors: list[uuid.UUID]
    counselor: uuid.UUID | None
    logins: set[uuid.UUID] = field(default_factory=set)


def _fake_name(rng: random.Random) -> str:
    return f"{rng.choice(SURNAMES)}{rng.choice(GIVEN)}（示例）"


def _day_between(rng: random.Random, start: date, end: date) -> date:
    if end <= start:
        return start
    return start + timedelta(days=rng.randint(0, (end - start).days))


async def _add_staff(
    session: AsyncSession,
    username: str,
    role: Role,
    school_id: uuid.UUID,
    password_hash: str,
    class_id: uuid.UUID | None = None,
) -> uuid.UUID:
    user = User(
        id=uuid.uuid4(),
        username=username,
        display_name=f"{username}（示例）",
        password_hash=password_hash,
    )
    session.add(user)
    await session.flush()
    session.add(RoleGrant(user_id=user.id, role=role.value, school_id=school_id))
    if class_id is not None:
        session.add(ClassAssignment(user_id=user.id, class_id=class_id))
    await session.flush()
    return user.id


async def _add_school(
    session: AsyncSession,
    crypto: Crypto,
    rng: random.Random,
    *,
    name: str,
    code: str,
    year: str,
    number: int,
    password_hash: str,
    serial: list[int],
) -> SchoolStaff:
    from casemgr.demo import fake_national_id

    school = await add_school(session, name=name, code=code)
    first_year = int(year[:4])
    grades = (1, 3, 5) if "小学" in name else (7, 8, 9)
    staff = SchoolStaff(school.id, {}, [], None)
    for n, grade in enumerate(grades * 2 if number == 4 else grades):
        section = n // len(grades) + 1
        school_class = await add_class(
            session,
            school_id=school.id,
            name=f"{grade}年级{section}班"
            if grade < 7
            else f"{'七八九'[grade - 7]}年级{section}班",
            grade=grade,
            school_year=year,
        )
        staff.class_teachers[school_class.id] = await _add_staff(
            session,
            f"demo.s{number}.ct{n + 1}",
            Role.CLASS_TEACHER,
            school.id,
            password_hash,
            school_class.id,
        )
        for _ in range(rng.randint(22, 30)):
            serial[0] += 1
            birth = date(first_year - grade - 6, rng.randint(1, 12), rng.randint(1, 28))
            full_name = _fake_name(rng)
            await insert_student(
                session,
                crypto,
                school_class,
                StudentIn(
                    class_id=school_class.id,
                    full_name=full_name,
                    gender=rng.choice(("female", "male")),
                    birth_date=birth,
                    student_no=f"S{number}{first_year}{serial[0]:04d}",
                    # Serials from 101 on keep these apart from the demo school's IDs.
                    national_id=fake_national_id(birth, 100 + serial[0])
                    if rng.random() < 0.6
                    else None,
                    address=f"演示市示例区{rng.choice('东南西北')}苑{rng.randint(1, 40)}栋",
                    guardians=[
                        GuardianIn(
                            name=f"{full_name[0]}家长（示例）",
                            relation=rng.choice(("母亲", "父亲", "祖母", "祖父")),
                            phone=f"1990{number}{serial[0]:06d}",
                        )
                    ],
                ),
                actor=None,
            )
    for n in range(3):
        staff.mentors.append(
            await _add_staff(
                session, f"demo.s{number}.teacher{n + 1}", Role.TEACHER, school.id, password_hash
            )
        )
    staff.counselor = await _add_staff(
        session, f"demo.s{number}.counselor", Role.COUNSELOR, school.id, password_hash
    )
    return staff


async def _demo_school_staff(session: AsyncSession, school_id: uuid.UUID) -> SchoolStaff:
    """The logins ``casemgr.demo`` created in its school."""
    rows = (
        await session.execute(
            select(RoleGrant.user_id, RoleGrant.role).where(RoleGrant.school_id == school_id)
        )
    ).all()
    staff = SchoolStaff(school_id, {}, [], None)
    assignments = dict(
        (
            await session.execute(
                select(ClassAssignment.class_id, ClassAssignment.user_id)
                .join(SchoolClass, SchoolClass.id == ClassAssignment.class_id)
                .where(SchoolClass.school_id == school_id)
            )
        ).all()
    )
    staff.class_teachers.update(assignments)
    for user_id, role in rows:
        staff.logins.add(user_id)
        if role == Role.TEACHER.value:
            staff.mentors.append(user_id)
        elif role == Role.COUNSELOR.value:
            staff.counselor = user_id
    return staff


async def _care_for_school(
    session: AsyncSession,
    crypto: Crypto,
    rng: random.Random,
    staff: SchoolStaff,
    *,
    year: str,
    previous_year: str,
    counts: dict[str, int],
) -> None:
    today = clock.today()
    start = first_day(year)
    last_start = first_day(previous_year)
    students = list(
        await session.scalars(
            select(Student).where(Student.school_id == staff.school_id).order_by(Student.code)
        )
    )
    ciphers = await crypto.ciphers(session, [s.data_key_id for s in students])
    # Every class teacher has visited most families this year, a few last year too.
    for student in students:
        cipher = ciphers[student.data_key_id]
        teacher = staff.class_teachers.get(student.class_id)
        if teacher is not None and rng.random() < 0.7:
            session.add(
                new_home_visit(
                    cipher,
                    student_id=student.id,
                    author_id=teacher,
                    school_year=year,
                    visited_on=_day_between(rng, start, today),
                    mode=rng.choice(("in_person", "in_person", "phone", "video")),
                    notes=rng.choice(VISIT_NOTES),
                    participant_ids=[],
                )
            )
            counts["home_visits"] += 1
    mentor_cycle = 0
    for student in students:
        if rng.random() > 0.16:
            continue
        cipher = ciphers[student.data_key_id]
        author = staff.class_teachers.get(student.class_id)
        earlier = rng.random() < 0.2
        opened_on = _day_between(
            rng,
            last_start if earlier else start,
            (start - timedelta(days=30)) if earlier else today,
        )
        case = new_case_file(
            cipher,
            student_id=student.id,
            code=new_case_code(),
            reason="Opened when a care category was recorded.",
            opened_on=opened_on,
            created_by=author,
            review_on=opened_on + timedelta(days=CASE_REVIEW_DAYS),
        )
        if rng.random() < 0.5:
            cipher.seal_fields(case, support_plan=rng.choice(PLANS))
        session.add(case)
        await session.flush()
        counts["case_files"] += 1
        for category in rng.sample(sorted(DETAILS), k=1 if rng.random() < 0.8 else 2):
            record = new_category(
                cipher,
                student_id=student.id,
                case_id=case.id,
                category=category,
                since=opened_on - timedelta(days=rng.randint(30, 900)),
                details=DETAILS[category],
                review_on=opened_on + timedelta(days=rng.choice((180, 365))),
                created_by=author,
            )
            if earlier and rng.random() < 0.5:
                cipher.seal_fields(
                    record,
                    ended_on=opened_on + timedelta(days=60),
                    end_reason="The family's situation changed.",
                )
            session.add(record)
            counts["care_categories"] += 1
        if staff.mentors and rng.random() < 0.75:
            size = 1 if rng.random() < 0.6 else min(len(staff.mentors), rng.choice((2, 3)))
            # The demo teacher gets a fair share of the pairings, so its login sees them.
            mentors = [staff.mentors[(mentor_cycle + i) % len(staff.mentors)] for i in range(size)]
            mentor_cycle += 1
            pairing, members = new_pairing(
                cipher,
                case=case,
                mode="one_to_one" if size == 1 else "many_to_one",
                goals=rng.choice(GOALS),
                starts_on=opened_on + timedelta(days=3),
                mentor_ids=mentors,
                lead_id=mentors[0],
                created_by=author,
            )
            session.add(pairing)
            await session.flush()
            session.add_all(members)
            counts["pairings"] += 1
            log_day = opened_on + timedelta(days=5)
            for n in range(rng.randint(1, 5)):
                if log_day > today:
                    break
                kind = rng.choice(sorted(LOG_NOTES))
                session.add(
                    new_support_log(
                        cipher,
                        case=case,
                        author_id=mentors[n % len(mentors)],
                        school_year=year if log_day >= start else previous_year,
                        occurred_on=log_day,
                        kind=kind,
                        notes=LOG_NOTES[kind],
                        follow_up_on=log_day + timedelta(days=14) if rng.random() < 0.6 else None,
                    )
                )
                counts["support_logs"] += 1
                log_day += timedelta(days=rng.randint(10, 30))
        if staff.counselor is not None and rng.random() < 0.3:
            session.add(
                new_guidance(
                    cipher,
                    case=case,
                    author_id=staff.counselor,
                    school_year=year,
                    text=rng.choice(GUIDANCE),
                )
            )
            counts["guidance"] += 1
        if earlier and rng.random() < 0.5:
            close_case_file(
                cipher,
                case,
                closed_on=start - timedelta(days=10),
                reason="Goals reached; the family is doing well.",
            )
    await session.flush()


async def _extras(session: AsyncSession, crypto: Crypto, staff: SchoolStaff, year: str) -> None:
    """What makes the demo logins' own pages lively: a task and an emergency access."""
    session.add(
        VisitRequirement(
            school_id=staff.school_id, school_year=year, class_teacher_visits=1, mentor_visits=2
        )
    )
    student = await session.scalar(
        select(Student).where(Student.school_id == staff.school_id).order_by(Student.code)
    )
    if student is None:
        return
    cipher: FieldCipher = await crypto.cipher(session, student.data_key_id)
    if staff.counselor is not None:
        task = Task(
            id=uuid.uuid4(),
            student_id=student.id,
            assignee_id=staff.counselor,
            created_by=staff.counselor,
        )
        cipher.seal_fields(
            task,
            kind="follow_up",
            due_on=clock.today() + timedelta(days=10),
            note="Check in with the class teacher after the mid-term exams.",
        )
        session.add(task)
    if staff.mentors:
        granted = clock.now() - timedelta(days=1)
        grant = EmergencyGrant(
            id=uuid.uuid4(),
            user_id=staff.mentors[0],
            student_id=student.id,
            school_id=staff.school_id,
            granted_at=granted,
            expires_at=granted + timedelta(minutes=60),
        )
        system = await crypto.system_cipher(session, EMERGENCY_KEY)
        system.seal_fields(
            grant,
            reason="Guardian phoned late in the evening; needed the file's contact plan.",
            review_note=None,
        )
        session.add(grant)
    await session.flush()


async def seed_care_programme(
    session: AsyncSession,
    crypto: Crypto,
    *,
    school_id: uuid.UUID,
    year: str,
    rng: random.Random,
) -> dict[str, Any]:
    """Grow the demo into a county and give every school care records (module docstring)."""
    previous_year = f"{int(year[:4]) - 1}-{year[:4]}"
    # Nobody is told this password: the extra staff exist to be mentors and authors.
    password_hash = await passwords.hash_password(secrets.token_urlsafe(32))
    counts = dict.fromkeys(
        (
            "schools",
            "students",
            "case_files",
            "care_categories",
            "pairings",
            "support_logs",
            "home_visits",
            "guidance",
        ),
        0,
    )
    serial = [0]
    schools = [await _demo_school_staff(session, school_id)]
    for number, (name, code) in enumerate(SCHOOLS, start=2):
        schools.append(
            await _add_school(
                session,
                crypto,
                rng,
                name=name,
                code=code,
                year=year,
                number=number,
                password_hash=password_hash,
                serial=serial,
            )
        )
    counts["schools"] = len(SCHOOLS)
    counts["students"] = serial[0]
    for staff in schools:
        await _care_for_school(
            session, crypto, rng, staff, year=year, previous_year=previous_year, counts=counts
        )
    await _extras(session, crypto, schools[0], year)
    await audit.record(
        session,
        audit.Action.DEMO_SEED,
        actor=None,
        resource_type="county",
        detail=counts,
    )
    return counts
