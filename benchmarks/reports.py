"""Benchmark 6: the county care summary (SPEC §8: <= 2 s for 100,000 students).

``students`` students in ``schools`` schools, a fifth of them in the care programme with a
case file and one or two care categories (sealed under each student's own key, so the
report unwraps a key and opens two fields per membership). A bureau admin asks
``GET /api/v1/reports/care-summary`` through the application in process; ``ms`` is the
median time of the whole request.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from datetime import date, timedelta
from typing import Any

from benchmarks.common import Scratch, spread

CATEGORIES = ("orphan", "single_parent", "disability", "financial_hardship", "left_behind")


async def _seed(settings: Any, students: int, schools: int, progress: Any) -> str:
    from sqlalchemy import insert

    from casemgr.accounts.services import create_user, issue_token
    from casemgr.authz import Role
    from casemgr.care.models import CareCategory, CaseFile
    from casemgr.crypto import Crypto, FieldCipher, KeyRing
    from casemgr.crypto.envelope import new_data_key, wrap_with
    from casemgr.crypto.models import DataKey
    from casemgr.db import create_engine, create_sessionmaker, transaction
    from casemgr.schools.services import add_class, add_school
    from casemgr.schoolyear import calendar_school_year
    from casemgr.screening.bulk import seal_values
    from casemgr.students.models import Student
    from casemgr.students.services import new_student_code

    rng = random.Random(6)
    crypto = Crypto(KeyRing(settings.keys_dir))
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    year = calendar_school_year()
    today = date.today()
    try:
        async with transaction(sessions) as session:
            admin = await create_user(
                session,
                crypto,
                username="bench.bureau",
                password="benchmark password 1",  # noqa: S106 - scratch database
                role=Role.BUREAU_ADMIN,
            )
            token, _, _ = await issue_token(session, settings, admin.id)
            classes = []
            for n in range(schools):
                school = await add_school(session, name=f"基准学校{n:03d}", code=f"BR{n:03d}")
                school_class = await add_class(
                    session, school_id=school.id, name="七年级1班", grade=7, school_year=year
                )
                classes.append((school.id, school_class.id))
        version = crypto.keyring.current_kek_version
        kek = crypto.kek_aead(version)
        codes: set[str] = set()
        for start in range(0, students, 5000):
            keys, people, cases, memberships = [], [], [], []
            for n in range(start, min(students, start + 5000)):
                key_id, raw, student_id = uuid.uuid4(), new_data_key(), uuid.uuid4()
                cipher = FieldCipher(key_id, raw)
                school_id, class_id = classes[n % schools]
                keys.append(
                    {
                        "id": key_id,
                        "purpose": "student",
                        "kek_version": version,
                        "wrapped": wrap_with(kek, version, key_id, raw),
                    }
                )
                code = new_student_code()
                while code in codes:
                    code = new_student_code()
                codes.add(code)
                people.append(
                    {
                        "id": student_id,
                        "school_id": school_id,
                        "class_id": class_id,
                        "code": code,
                        "data_key_id": key_id,
                        "student_no_bidx": crypto.blind_index(
                            "student_no", f"R{n}", str(school_id)
                        ),
                        "national_id_bidx": uuid.uuid4().bytes[:8],
                        "bidx_version": crypto.keyring.blind_index_version,
                        **seal_values(
                            cipher,
                            Student,
                            student_id,
                            {
                                "full_name": f"基准学生{n}",
                                "gender": "female" if n % 2 else "male",
                                "birth_date": date(2013, 1 + n % 12, 1 + n % 28),
                                "student_no": f"R{n}",
                                "national_id": None,
                                "address": None,
                                "guardians": None,
                            },
                        ),
                    }
                )
                if rng.random() >= 0.2:
                    continue
                case_id = uuid.uuid4()
                opened = today - timedelta(days=rng.randint(1, 300))
                cases.append(
                    {
                        "id": case_id,
                        "student_id": student_id,
                        "code": f"C{uuid.uuid4().hex[:12].upper()}",
                        **seal_values(
                            cipher,
                            CaseFile,
                            case_id,
                            {
                                "status": "open",
                                "opened_on": opened,
                                "open_reason": "Opened when a care category was recorded.",
                                "closed_on": None,
                                "close_reason": None,
                                "support_plan": None,
                                "review_on": opened + timedelta(days=90),
                            },
                        ),
                    }
                )
                for category in rng.sample(CATEGORIES, k=1 if rng.random() < 0.8 else 2):
                    membership_id = uuid.uuid4()
                    memberships.append(
                        {
                            "id": membership_id,
                            "student_id": student_id,
                            "case_id": case_id,
                            **seal_values(
                                cipher,
                                CareCategory,
                                membership_id,
                                {
                                    "category": category,
                                    "since": opened - timedelta(days=100),
                                    "details": None,
                                    "review_on": None,
                                    "ended_on": None,
                                    "end_reason": None,
                                },
                            ),
                        }
                    )
            async with engine.begin() as conn:
                for model, rows in (
                    (DataKey, keys),
                    (Student, people),
                    (CaseFile, cases),
                    (CareCategory, memberships),
                ):
                    if rows:
                        await conn.execute(insert(model.__table__), rows)  # type: ignore[arg-type]
            progress(f"students {min(students, start + 5000)}/{students}")
    finally:
        await engine.dispose()
    return token


def run_care_summary(
    scr: Scratch, *, students: int, schools: int, runs: int, progress: Any
) -> dict[str, Any]:
    from litestar.testing import TestClient

    from casemgr.app import create_app

    settings = scr.settings()
    token = asyncio.run(_seed(settings, students, schools, progress))
    timings = []
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        for run in range(runs + 1):
            progress(f"care summary {run}/{runs}")
            started = time.perf_counter()
            response = client.get(
                "/api/v1/reports/care-summary", headers={"Authorization": f"Bearer {token}"}
            )
            elapsed = 1000 * (time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"care summary failed: {response.status_code}")
            if run:  # the first request warms the process up
                timings.append(elapsed)
    ms = statistics.median(timings)
    return {
        "benchmark": "care_summary",
        "backend": scr.backend,
        "students": students,
        "schools": schools,
        "runs": runs,
        "ms": round(ms, 1),
        "ms_runs": spread(timings),
        "targets": {"ms": "<= 2000"},
        "met": ms <= 2000,
    }
