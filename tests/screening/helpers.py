"""Screening test helpers: rounds, consents and uploads through the real routes, and
bulk set-up (many students, many consents) straight through the services' sealing."""

from __future__ import annotations

import io
import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import clock
from casemgr.crypto.models import DataKey
from casemgr.db import new_id, utcnow
from casemgr.schools.models import SchoolClass
from casemgr.screening.models import Consent
from casemgr.students.models import Student
from casemgr.students.services import StudentFields, insert_student
from casemgr.tabular import CSV, XLSX, write_csv
from tests.factories import issue_token

PHQ9_ITEMS = 9


def window() -> tuple[date, date]:
    """A round window around today (whatever today the clock says)."""
    today = clock.today()
    return today - timedelta(days=20), today + timedelta(days=10)


def administered() -> date:
    return clock.today() - timedelta(days=2)


def create_round(
    client: Any,
    world: Any,
    *,
    instrument: str = "phq9",
    class_ids: list[uuid.UUID] | None = None,
    account: str = "counselor_a",
    opens_on: date | None = None,
    closes_on: date | None = None,
) -> str:
    opens, closes = window()
    response = client.post(
        "/api/v1/screening/rounds",
        json={
            "school_id": str(world.school_a),
            "name": "春季心理普查",
            "instrument": instrument,
            "school_year": "2026-2027",
            "class_ids": [str(c) for c in (class_ids or [world.class_a1, world.class_a2])],
            "opens_on": (opens_on or opens).isoformat(),
            "closes_on": (closes_on or closes).isoformat(),
        },
        headers=world[account].headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def consent(
    client: Any,
    world: Any,
    round_id: str,
    student_id: uuid.UUID,
    decision: str = "granted",
    account: str = "counselor_a",
) -> Any:
    return client.post(
        f"/api/v1/screening/rounds/{round_id}/consents",
        json={
            "student_id": str(student_id),
            "decision": decision,
            "guardian_name": "测试家长",
            "recorded_on": clock.today().isoformat(),
        },
        headers=world[account].headers,
    )


def table(
    rows: list[tuple[str, list[int | None] | list[str]]],
    *,
    items: int = PHQ9_ITEMS,
    on: date | None = None,
    extra_columns: bool = False,
) -> list[list[str]]:
    """Header and rows of a results upload (answers None -> empty cell)."""
    header = ["student_no", "administered_on", *(f"q{n}" for n in range(1, items + 1))]
    if extra_columns:  # as a survey tool exports them: columns the import ignores
        header = ["序号", "提交答卷时间", *header, "来源IP"]
    body = []
    for student_no, answers in rows:
        cells = ["" if a is None else str(a) for a in answers]
        row = [student_no, (on or administered()).isoformat(), *cells]
        if extra_columns:
            row = ["1", "2026/3/1 10:00:00", *row, "127.0.0.1"]
        body.append(row)
    return [header, *body]


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    for row in rows:
        sheet.append([int(c) if c.isdigit() and len(c) < 3 else c for c in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def upload(
    client: Any,
    world: Any,
    round_id: str,
    body: bytes | list[list[str]],
    *,
    content_type: str = CSV,
    account: str = "counselor_a",
    encoding: str = "utf-8",
) -> Any:
    data = write_csv(body, encoding) if isinstance(body, list) else body
    return client.post(
        f"/api/v1/screening/rounds/{round_id}/results",
        content=data,
        headers={**world[account].headers, "Content-Type": content_type},
    )


def result_ids(db: Any, round_id: str) -> dict[uuid.UUID, uuid.UUID]:
    """student id -> result id, for a round."""
    rows = db.execute(
        "SELECT student_id, id FROM screening_results WHERE round_id = :r",
        {"r": db.id(uuid.UUID(round_id))},
    )
    return {_uuid(s): _uuid(r) for s, r in rows}


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def student_no(db: Any, student_id: uuid.UUID) -> str:
    async def body(session: AsyncSession) -> str:
        student = await session.get(Student, student_id)
        assert student is not None
        cipher = await db.crypto.cipher(session, student.data_key_id)
        value: str = cipher.open_field(student, "student_no")
        return value

    return db.in_transaction(body)


def add_students(db: Any, class_id: uuid.UUID, count: int, *, prefix: str) -> dict[str, uuid.UUID]:
    """``count`` students in one class, numbered ``{prefix}00001``...; number -> id."""

    async def body(session: AsyncSession) -> dict[str, uuid.UUID]:
        school_class = await session.get(SchoolClass, class_id)
        assert school_class is not None
        created = {}
        for n in range(1, count + 1):
            number = f"{prefix}{n:05d}"
            fields = StudentFields(
                full_name=f"批量学生{n:05d}",
                gender="female" if n % 2 else "male",
                birth_date=date(2013, 1 + n % 12, 1 + n % 28),
                student_no=number,
                national_id=None,
                address=None,
                guardians=[],
            )
            student = await insert_student(session, db.crypto, school_class, fields, actor=None)
            created[number] = student.id
        return created

    return db.in_transaction(body)


def grant_all(
    db: Any, round_id: str, student_ids: list[uuid.UUID], decision: str = "granted"
) -> None:
    """Record one decision for many students at once (sealed as the service seals it)."""

    async def body(session: AsyncSession) -> None:
        from sqlalchemy import select

        rows = await session.execute(
            select(Student.id, Student.data_key_id, DataKey.kek_version, DataKey.wrapped)
            .join(DataKey, DataKey.id == Student.data_key_id)
            .where(Student.id.in_(student_ids))
        )
        for student_id, key_id, version, wrapped in rows:
            cipher = db.crypto.open_data_key(key_id, version, wrapped)
            record = Consent(
                id=new_id(),
                round_id=uuid.UUID(round_id),
                student_id=student_id,
                recorded_at=utcnow(),
            )
            cipher.seal_fields(
                record, decision=decision, guardian_name="批量家长", recorded_on=clock.today()
            )
            session.add(record)

    db.in_transaction(body)


def fresh_token(db: Any, world: Any, account: str) -> dict[str, str]:
    """A new bearer token for ``account``, issued at the clock's present time."""
    user_id = world[account].id
    token = db.in_transaction(lambda session: issue_token(session, user_id))
    world[account].token = token
    return world[account].headers


__all__ = ["CSV", "XLSX"]
