"""Data for the HTTP benchmarks, written through the services' own builders.

One school; a class teacher with ``classes`` classes of ``per_class`` students; every
student with personal details (sealed), and a case file holding about twenty sealed
fields: the file's own (7), a care category (6), a support log (4) and a home visit (4).
The same values are stored unencrypted in the benchmark-only ``bench_plain_*`` tables.
Also ``logins`` accounts with a known password, for the login benchmark.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from benchmarks.server import (
    PLAIN,
    PLAIN_CASES,
    PLAIN_CATEGORIES,
    PLAIN_HOME_VISITS,
    PLAIN_STUDENTS,
    PLAIN_SUPPORT_LOGS,
)

PASSWORD = "benchmark password 1"  # noqa: S105 - throwaway accounts of a scratch database
GB_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def national_id(birth: date, serial: int) -> str:
    body = f"110105{birth:%Y%m%d}{serial % 1000:03d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, GB_WEIGHTS, strict=True)) % 11]
    return body + check


@dataclass
class ReadWorld:
    tokens: list[str]
    student_ids: list[str]
    case_ids: list[str]
    logins: list[str] = field(default_factory=list)


async def seed_reads(
    settings: Any, *, classes: int = 4, per_class: int = 50, tokens: int = 8, logins: int = 0
) -> ReadWorld:
    from sqlalchemy import insert

    from casemgr import clock
    from casemgr.accounts.services import create_user, issue_token
    from casemgr.authz import Role
    from casemgr.care.services import (
        new_case_code,
        new_case_file,
        new_category,
        new_home_visit,
        new_support_log,
    )
    from casemgr.crypto import Crypto, KeyRing
    from casemgr.db import create_engine, create_sessionmaker, transaction
    from casemgr.schools.services import add_class, add_school
    from casemgr.schoolyear import calendar_school_year
    from casemgr.students.schemas import GuardianIn, StudentIn
    from casemgr.students.services import insert_student

    crypto = Crypto(KeyRing(settings.keys_dir))
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    year = calendar_school_year()
    today = clock.today()
    plain: dict[Any, list[dict[str, Any]]] = {
        t: []
        for t in (
            PLAIN_STUDENTS,
            PLAIN_CASES,
            PLAIN_CATEGORIES,
            PLAIN_SUPPORT_LOGS,
            PLAIN_HOME_VISITS,
        )
    }
    world = ReadWorld(tokens=[], student_ids=[], case_ids=[])
    try:
        async with engine.begin() as conn:
            await conn.run_sync(PLAIN.create_all)
        async with transaction(sessions) as session:
            school = await add_school(session, name="基准测试学校", code="BENCH-READ")
            school_classes = [
                await add_class(
                    session, school_id=school.id, name=f"七年级{n + 1}班", grade=7, school_year=year
                )
                for n in range(classes)
            ]
            teacher = await create_user(
                session,
                crypto,
                username="bench.teacher",
                password=PASSWORD,
                role=Role.CLASS_TEACHER,
                school_id=school.id,
                class_ids=[c.id for c in school_classes],
            )
            for _ in range(tokens):
                token, _, _ = await issue_token(session, settings, teacher.id)
                world.tokens.append(token)
        for n in range(logins):
            async with transaction(sessions) as session:
                await create_user(
                    session,
                    crypto,
                    username=f"bench.login{n:02d}",
                    password=PASSWORD,
                    role=Role.TEACHER,
                    school_id=school.id,
                )
            world.logins.append(f"bench.login{n:02d}")
        serial = 0
        for school_class in school_classes:
            async with transaction(sessions) as session:
                for _ in range(per_class):
                    serial += 1
                    birth = date(2013, 1 + serial % 12, 1 + serial % 28)
                    data = StudentIn(
                        class_id=school_class.id,
                        full_name=f"基准学生{serial:04d}",
                        gender="female" if serial % 2 else "male",
                        birth_date=birth,
                        student_no=f"B{serial:06d}",
                        national_id=national_id(birth, serial),
                        address=f"示例市示例区示例路{serial}号",
                        guardians=[
                            GuardianIn(
                                name=f"家长{serial:04d}", relation="母亲", phone="13800000000"
                            )
                        ],
                    )
                    student = await insert_student(session, crypto, school_class, data, actor=None)
                    cipher = crypto.open_data_key(
                        student.data_key_id, *await _wrapped(session, student.data_key_id)
                    )
                    opened_on = today - timedelta(days=20)
                    case = new_case_file(
                        cipher,
                        student_id=student.id,
                        code=new_case_code(),
                        reason="Opened when a care category was recorded.",
                        opened_on=opened_on,
                        created_by=teacher.id,
                    )
                    session.add(case)
                    await session.flush()
                    category = new_category(
                        cipher,
                        student_id=student.id,
                        case_id=case.id,
                        category="left_behind",
                        since=opened_on - timedelta(days=200),
                        details="Lives with the grandparents while both parents work away.",
                        review_on=opened_on + timedelta(days=180),
                        created_by=teacher.id,
                    )
                    log = new_support_log(
                        cipher,
                        case=case,
                        author_id=teacher.id,
                        school_year=year,
                        occurred_on=opened_on + timedelta(days=3),
                        kind="conversation",
                        notes="Talked about the week at school; agreed to meet again.",
                        follow_up_on=today + timedelta(days=10),
                    )
                    visit = new_home_visit(
                        cipher,
                        student_id=student.id,
                        author_id=teacher.id,
                        school_year=year,
                        visited_on=opened_on + timedelta(days=5),
                        mode="in_person",
                        notes="Visited the family at home; the grandmother was there.",
                        participant_ids=[teacher.id],
                    )
                    session.add_all([category, log, visit])
                    world.student_ids.append(str(student.id))
                    world.case_ids.append(str(case.id))
                    plain[PLAIN_STUDENTS].append(
                        {
                            "id": student.id,
                            "code": student.code,
                            "school_id": school.id,
                            "class_id": school_class.id,
                            "full_name": data.full_name,
                            "gender": data.gender,
                            "birth_date": data.birth_date,
                            "student_no": data.student_no,
                            "national_id": data.national_id,
                            "address": data.address,
                            "guardians": json.dumps(
                                [
                                    {"name": g.name, "relation": g.relation, "phone": g.phone}
                                    for g in data.guardians or []
                                ],
                                ensure_ascii=False,
                            ),
                        }
                    )
                    plain[PLAIN_CASES].append(
                        {
                            "id": case.id,
                            "code": case.code,
                            "student_id": student.id,
                            "status": "open",
                            "opened_on": opened_on,
                            "review_on": opened_on + timedelta(days=90),
                            "closed_on": None,
                            "open_reason": "Opened when a care category was recorded.",
                            "close_reason": None,
                            "support_plan": None,
                        }
                    )
                    plain[PLAIN_CATEGORIES].append(
                        {
                            "id": category.id,
                            "case_id": case.id,
                            "category": "left_behind",
                            "since": opened_on - timedelta(days=200),
                            "details": "Lives with the grandparents while both parents work away.",
                            "review_on": opened_on + timedelta(days=180),
                            "ended_on": None,
                            "end_reason": None,
                        }
                    )
                    plain[PLAIN_SUPPORT_LOGS].append(
                        {
                            "id": log.id,
                            "case_id": case.id,
                            "occurred_on": opened_on + timedelta(days=3),
                            "kind": "conversation",
                            "notes": "Talked about the week at school; agreed to meet again.",
                            "follow_up_on": today + timedelta(days=10),
                        }
                    )
                    plain[PLAIN_HOME_VISITS].append(
                        {
                            "id": visit.id,
                            "student_id": student.id,
                            "visited_on": opened_on + timedelta(days=5),
                            "mode": "in_person",
                            "notes": "Visited the family at home; the grandmother was there.",
                            "participant_ids": json.dumps([str(teacher.id)]),
                        }
                    )
        async with engine.begin() as conn:
            for table, rows in plain.items():
                await conn.execute(insert(table), rows)
    finally:
        await engine.dispose()
    return world


async def _wrapped(session: Any, key_id: uuid.UUID) -> tuple[int | None, bytes | None]:
    from sqlalchemy import select

    from casemgr.crypto.models import DataKey

    row = (
        await session.execute(
            select(DataKey.kek_version, DataKey.wrapped).where(DataKey.id == key_id)
        )
    ).one()
    return row.kek_version, row.wrapped
