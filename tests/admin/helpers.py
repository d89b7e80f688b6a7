"""Shared helpers for the school administration tests (issue 6)."""

from __future__ import annotations

import io
import time
import uuid
from datetime import date, timedelta
from typing import Any

import pyotp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts.services import create_user
from casemgr.authz import Role
from casemgr.tabular import write_csv
from tests.factories import PASSWORD, Account, issue_token, national_id

NEW_PASSWORD = "violet kettle orbit pasture"
HEADER = [
    "class_name",
    "student_no",
    "full_name",
    "gender",
    "birth_date",
    "national_id",
    "address",
    "guardian_name",
    "guardian_relation",
    "guardian_phone",
]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["一鸣", "子涵", "雨萱", "浩然", "欣怡", "梓轩", "思远", "可馨", "宇航", "诗琪"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_account(
    db: Any,
    username: str,
    role: Role,
    school_id: uuid.UUID | None,
    class_ids: list[uuid.UUID] | None = None,
) -> Account:
    """An account made the way the CLI makes one (password set, factor enrolled), with a
    ready token."""

    async def body(session: AsyncSession) -> Account:
        created = await create_user(
            session,
            db.crypto,
            username=username,
            password=PASSWORD,
            role=role,
            school_id=school_id,
            class_ids=class_ids or [],
        )
        account = Account(created.id, username, role, created.totp_secret)
        account.token = await issue_token(session, created.id)
        return account

    return db.in_transaction(body)


def code_after(secret: str, used: set[str] | None = None) -> str:
    """A TOTP code valid now: the current step's, or the next one's when the current step's
    was spent already (a code is good once)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    for offset in (0, 30):
        code = totp.at(now + offset)
        if not used or code not in used:
            return code
    raise AssertionError("no unused TOTP code near now")


def login(client: Any, username: str, password: str, totp: str | None = None) -> Any:
    body: dict[str, Any] = {"username": username, "password": password}
    if totp is not None:
        body["totp"] = totp
    return client.post("/api/v1/auth/login", json=body)


def first_login(
    client: Any, username: str, one_time_password: str, *, enrol_totp: bool
) -> tuple[str, str | None]:
    """Log in with a one-time password, enrol a factor when asked, change the password.

    Returns (a token that is no longer restricted, the TOTP secret or None).
    """
    response = login(client, username, one_time_password)
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    secret = None
    if enrol_totp:
        started = client.post("/api/v1/me/totp", headers=bearer(token))
        assert started.status_code == 200, started.text
        secret = started.json()["secret"]
        confirmed = client.post(
            "/api/v1/me/totp/confirm",
            json={"code": pyotp.TOTP(secret).now()},
            headers=bearer(token),
        )
        assert confirmed.status_code == 204, confirmed.text
    changed = client.post(
        "/api/v1/me/password",
        json={"current_password": one_time_password, "new_password": NEW_PASSWORD},
        headers=bearer(token),
    )
    assert changed.status_code == 204, changed.text
    return token, secret


def roster_rows(
    classes: list[str], count: int, *, first: int = 1, region: str = "110105"
) -> list[list[str]]:
    """``count`` data rows over ``classes`` with every column filled, all valid."""
    rows = []
    for n in range(first, first + count):
        birth = date(2013, 1, 1) + timedelta(days=n % 360)
        name = f"{SURNAMES[n % len(SURNAMES)]}{GIVEN[n % len(GIVEN)]}{n:04d}"
        rows.append(
            [
                classes[n % len(classes)],
                f"S{n:05d}",
                name,
                "女" if n % 2 else "male",
                f"{birth.year}/{birth.month}/{birth.day}" if n % 3 else birth.isoformat(),
                national_id(birth, n, region=region),
                f"示例路{n}号",
                f"{name[0]}家长",
                "母亲",
                f"1390000{n:04d}",
            ]
        )
    return rows


def csv_body(rows: list[list[str]], encoding: str = "utf-8", header: list[str] = HEADER) -> bytes:
    return write_csv([header, *rows], encoding=encoding)


def xlsx_body(rows: list[list[Any]], header: list[str] = HEADER) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("roster")
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def upload(client: Any, school_id: uuid.UUID, body: bytes, media_type: str, token: str) -> Any:
    return client.post(
        f"/api/v1/schools/{school_id}/students/import",
        content=body,
        headers={**bearer(token), "Content-Type": media_type},
    )


def count_students(db: Any, school_id: uuid.UUID | None = None) -> int:
    from sqlalchemy import func

    from casemgr.students.models import Student

    async def body(session: AsyncSession) -> int:
        query = select(func.count()).select_from(Student)
        if school_id is not None:
            query = query.where(Student.school_id == school_id)
        return int(await session.scalar(query) or 0)

    return db.in_transaction(body)


def actions(db: Any, action: str) -> list[Any]:
    return db.execute(
        "SELECT outcome, detail, student_id, school_id FROM audit_events WHERE action = :a"
        " ORDER BY seq",
        {"a": action},
    )


__all__ = ["PASSWORD"]
