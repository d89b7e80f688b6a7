"""A synthetic county for trying the service: every name is visibly made up."""

from __future__ import annotations

import json
import os
import random
import secrets
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.accounts.models import User
from casemgr.accounts.services import create_user
from casemgr.authz import Role
from casemgr.care.demo import seed_care_programme
from casemgr.crypto import Crypto
from casemgr.db import transaction
from casemgr.schools.models import School
from casemgr.schools.services import add_class, add_school
from casemgr.screening.demo import seed_screening
from casemgr.students.schemas import GuardianIn, StudentIn
from casemgr.students.services import insert_student

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = [
    "一鸣",
    "子涵",
    "雨萱",
    "浩然",
    "欣怡",
    "梓轩",
    "思远",
    "可馨",
    "宇航",
    "诗琪",
    "俊杰",
    "晨曦",
]
# Region code 999999 belongs to no real place, so demo ID numbers can never be someone's.
FAKE_REGION = "999999"
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


class DatabaseNotEmpty(Exception):
    pass


def current_school_year(today: date | None = None) -> str:
    today = today or date.today()
    start = today.year if today.month >= 8 else today.year - 1
    return f"{start}-{start + 1}"


def fake_national_id(birth: date, serial: int) -> str:
    body = f"{FAKE_REGION}{birth:%Y%m%d}{serial % 1000:03d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]
    return body + check


async def _is_empty(session: AsyncSession) -> bool:
    schools = await session.scalar(select(func.count()).select_from(School))
    users = await session.scalar(select(func.count()).select_from(User))
    return not schools and not users


async def seed(
    sessions: async_sessionmaker[AsyncSession], crypto: Crypto, *, students_per_class: int = 12
) -> list[dict[str, Any]]:
    """Create one school, three classes, students and one account per role."""
    # Seeded on purpose: the same synthetic names and dates every time; secrets use `secrets`.
    rng = random.Random(20260901)  # nosec B311
    year = current_school_year()
    first_year = int(year[:4])
    logins: list[dict[str, Any]] = []
    async with transaction(sessions) as session:
        if not await _is_empty(session):
            raise DatabaseNotEmpty
        school = await add_school(session, name="示例实验学校（演示）", code="DEMO-001")
        classes = [
            await add_class(session, school_id=school.id, name=name, grade=grade, school_year=year)
            for name, grade in (("七年级1班", 7), ("七年级2班", 7), ("八年级1班", 8))
        ]
        serial = 0
        for school_class in classes:
            for _ in range(students_per_class):
                serial += 1
                birth = date(
                    first_year - school_class.grade - 6, rng.randint(1, 12), rng.randint(1, 28)
                )
                name = f"{rng.choice(SURNAMES)}{rng.choice(GIVEN)}（示例）"
                await insert_student(
                    session,
                    crypto,
                    school_class,
                    StudentIn(
                        class_id=school_class.id,
                        full_name=name,
                        gender=rng.choice(("female", "male")),
                        birth_date=birth,
                        student_no=f"D{first_year}{serial:04d}",
                        national_id=fake_national_id(birth, serial) if serial % 2 else None,
                        address=f"演示市示例区样板路{rng.randint(1, 300)}号",
                        guardians=[
                            GuardianIn(
                                name=f"{name[0]}家长（示例）",
                                relation="母亲",
                                phone=f"1990000{serial:04d}",
                            )
                        ],
                    ),
                    actor=None,
                )
        accounts = [
            ("demo.classteacher", Role.CLASS_TEACHER, school.id, [classes[0].id]),
            ("demo.teacher", Role.TEACHER, school.id, []),
            ("demo.counselor", Role.COUNSELOR, school.id, []),
            ("demo.leader", Role.SCHOOL_LEADER, school.id, []),
            ("demo.admin", Role.BUREAU_ADMIN, None, []),
            ("demo.auditor", Role.AUDITOR, None, []),
        ]
        for username, role, school_id, class_ids in accounts:
            password = secrets.token_urlsafe(12)
            created = await create_user(
                session,
                crypto,
                username=username,
                password=password,
                role=role,
                school_id=school_id,
                class_ids=class_ids,
            )
            logins.append(
                {
                    "role": role.value,
                    "username": username,
                    "password": password,
                    "totp_secret": created.totp_secret,
                    # What a newcomer needs next: the class ids a class teacher reads.
                    "classes": [
                        {"id": str(c.id), "name": c.name, "school_year": c.school_year}
                        for c in classes
                        if c.id in class_ids
                    ],
                }
            )
        # Synthetic data only: a seeded generator keeps the demo county reproducible.
        care_rng = random.Random(rng.random())  # nosec B311
        screening_rng = random.Random(rng.random())  # nosec B311
        # The care programme grows the demo into a county with care records.
        await seed_care_programme(session, crypto, school_id=school.id, year=year, rng=care_rng)
        # A screening round with consents and results, some awaiting review.
        await seed_screening(session, crypto, school_id=school.id, year=year, rng=screening_rng)
        await audit.record(
            session,
            audit.Action.DEMO_SEED,
            actor=None,
            resource_type="school",
            resource_id=school.id,
            school_id=school.id,
            detail={"students": serial},
        )
    return logins


# -- the demo logins, kept for `casemgr demo --show-logins` (issue 6) ----------------------
#
# Demo passwords are random and stored only as Argon2 hashes, so they cannot be shown again
# from the database. The seeding command keeps what it printed in a file beside the demo
# database, readable by its owner only (0600) and marked demo-only; `--show-logins` reads
# it back, after checking that this database is the one it was written for.

LOGINS_FILE = "demo-logins.json"
DEMO_SCHOOL_CODE = "DEMO-001"
DEMO_ONLY = (
    "Demo only: synthetic accounts of a synthetic county. Never use the demo in production;"
    " delete this file with the demo database."
)


def logins_path(var_dir: Path) -> Path:
    return var_dir / LOGINS_FILE


async def demo_school_id(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID | None:
    """The demo school of this database, if the demo seeded it."""
    async with sessions() as session:
        return await session.scalar(select(School.id).where(School.code == DEMO_SCHOOL_CODE))


def save_logins(var_dir: Path, school_id: uuid.UUID, logins: list[dict[str, Any]]) -> Path:
    """Write the demo logins to ``var_dir`` (0600, replacing an older demo's file)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = logins_path(var_dir)
    payload = {"notice": DEMO_ONLY, "school_id": str(school_id), "logins": logins}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump(payload, handle, ensure_ascii=False, indent=1)
    return path


def saved_logins(var_dir: Path, school_id: uuid.UUID | None) -> list[dict[str, Any]] | None:
    """The logins saved when the demo school ``school_id`` was seeded, or None (no file,
    or a file written for another database)."""
    path = logins_path(var_dir)
    if school_id is None or not path.exists():
        return None
    payload = json.loads(path.read_text(encoding="utf-8"))
    return list(payload["logins"]) if payload.get("school_id") == str(school_id) else None
