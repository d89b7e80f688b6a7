"""Test data: a small county with two schools, built through the real services."""

from __future__ import annotations

import functools
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pyotp
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts import passwords
from casemgr.accounts.models import AuthToken
from casemgr.accounts.services import create_user
from casemgr.authz import Role
from casemgr.db import utcnow
from casemgr.schools.models import SchoolClass
from casemgr.schools.services import add_class, add_school
from casemgr.students.schemas import GuardianIn, StudentIn
from casemgr.students.services import insert_student

PASSWORD = "correct horse battery staple"
SCHOOL_YEAR = "2026-2027"
GB_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def national_id(birth: date, serial: int, region: str = "110105") -> str:
    body = f"{region}{birth:%Y%m%d}{serial % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, GB_WEIGHTS, strict=True)) % 11]


@functools.cache
def _password_hash() -> str:
    return passwords.hash_password_sync(PASSWORD)


@dataclass
class Account:
    id: uuid.UUID
    username: str
    role: Role
    totp_secret: str | None
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def totp_now(self) -> str:
        assert self.totp_secret
        return pyotp.TOTP(self.totp_secret).now()


@dataclass
class World:
    school_a: uuid.UUID
    school_b: uuid.UUID
    class_a1: uuid.UUID
    class_a2: uuid.UUID
    class_b1: uuid.UUID
    students: dict[str, uuid.UUID] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Account:
        return self.accounts[name]


def student_payload(class_id: uuid.UUID, n: int, **overrides: Any) -> dict[str, Any]:
    birth = date(2013, 1 + n % 12, 1 + n % 28)
    payload: dict[str, Any] = {
        "class_id": str(class_id),
        "full_name": f"测试学生{n:03d}",
        "gender": "female" if n % 2 else "male",
        "birth_date": birth.isoformat(),
        "student_no": f"NO{n:05d}",
        "national_id": national_id(birth, n),
        "address": f"测试路{n}号",
        "guardians": [{"name": f"测试家长{n:03d}", "relation": "母亲", "phone": f"1380000{n:04d}"}],
    }
    payload.update(overrides)
    return payload


async def add_student(
    session: AsyncSession, crypto: Any, class_id: uuid.UUID, n: int, **overrides: Any
) -> uuid.UUID:
    school_class = await session.get(SchoolClass, class_id)
    assert school_class is not None
    payload = student_payload(class_id, n, **overrides)
    data = StudentIn(
        class_id=class_id,
        full_name=payload["full_name"],
        gender=payload["gender"],
        birth_date=date.fromisoformat(payload["birth_date"]),
        student_no=payload["student_no"],
        national_id=payload["national_id"],
        address=payload["address"],
        guardians=[GuardianIn(**g) for g in payload["guardians"]],
    )
    return (await insert_student(session, crypto, school_class, data, actor=None)).id


async def issue_token(
    session: AsyncSession, user_id: uuid.UUID, ttl: timedelta = timedelta(hours=1)
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        AuthToken(
            user_id=user_id,
            token_hash=hashlib.sha256(token.encode()).digest(),
            expires_at=utcnow() + ttl,
        )
    )
    return token


def build_world(db: Any) -> World:
    """School A (classes A1, A2), school B (class B1), students, one account per role.

    Accounts: ct_a1 (class teacher of A1), ct_b1, teacher_a, counselor_a, leader_a,
    admin, auditor; each gets a ready bearer token.
    """

    async def body(session: AsyncSession) -> World:
        school_a = (await add_school(session, name="测试学校甲", code="T-A")).id
        school_b = (await add_school(session, name="测试学校乙", code="T-B")).id
        a1 = (
            await add_class(
                session, school_id=school_a, name="七年级1班", grade=7, school_year=SCHOOL_YEAR
            )
        ).id
        a2 = (
            await add_class(
                session, school_id=school_a, name="七年级2班", grade=7, school_year=SCHOOL_YEAR
            )
        ).id
        b1 = (
            await add_class(
                session, school_id=school_b, name="七年级1班", grade=7, school_year=SCHOOL_YEAR
            )
        ).id
        world = World(school_a, school_b, a1, a2, b1)
        for name, class_id, n in (
            ("a1_first", a1, 1),
            ("a1_second", a1, 2),
            ("a2_first", a2, 3),
            ("b1_first", b1, 4),
        ):
            world.students[name] = await add_student(session, db.crypto, class_id, n)
        specs = [
            ("ct_a1", Role.CLASS_TEACHER, school_a, [a1]),
            ("ct_b1", Role.CLASS_TEACHER, school_b, [b1]),
            ("teacher_a", Role.TEACHER, school_a, []),
            ("counselor_a", Role.COUNSELOR, school_a, []),
            ("leader_a", Role.SCHOOL_LEADER, school_a, []),
            ("admin", Role.BUREAU_ADMIN, None, []),
            ("auditor", Role.AUDITOR, None, []),
        ]
        original = passwords.hash_password

        async def cached_hash(password: str) -> str:
            return _password_hash() if password == PASSWORD else await original(password)

        passwords.hash_password = cached_hash  # type: ignore[assignment]
        try:
            for username, role, school_id, class_ids in specs:
                created = await create_user(
                    session,
                    db.crypto,
                    username=username,
                    password=PASSWORD,
                    role=role,
                    school_id=school_id,
                    class_ids=class_ids,
                )
                account = Account(created.id, username, role, created.totp_secret)
                account.token = await issue_token(session, created.id)
                world.accounts[username] = account
        finally:
            passwords.hash_password = original  # type: ignore[assignment]
        return world

    return db.in_transaction(body)
