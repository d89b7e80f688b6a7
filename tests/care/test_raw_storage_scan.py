"""Acceptance 6 (SPEC P1): no value of the care programme appears in the raw stored bytes.

A student's whole care record is written through the API with a marker in every sealed
field (``tests.care.markers``), then the raw SQLite files (database and write-ahead log)
or a ``pg_dump`` are scanned, as ``tests/test_raw_storage_scan.py`` does for personal
details. Controls prove the scan sees the rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.care.models import CaseFile, HomeVisit
from tests.care.markers import CLOSED_SET_WORDS, markers, write_whole_record
from tests.test_raw_storage_scan import as_bytes, pg_dump_bytes, sqlite_raw_bytes


def raw_storage(db: Any, settings: Any) -> bytes:
    if db.backend == "sqlite":
        return sqlite_raw_bytes(settings.database_url)
    return pg_dump_bytes(settings.database_url)


def leaked(raw: bytes, values: list[str]) -> list[str]:
    lowered = raw.lower()
    return [v for v in values if v.encode() in raw or v.encode().hex().encode() in lowered]


def test_no_care_value_appears_in_the_raw_database(care, world, db, settings):
    written = write_whole_record(care, world, db, settings, "a1_first")

    async def rows(session: AsyncSession) -> tuple[Any, Any]:
        case = await session.scalar(select(CaseFile).where(CaseFile.code.is_not(None)))
        visit = await session.scalar(select(HomeVisit))
        return case, visit

    case, visit = db.in_transaction(rows)
    for record in (case, visit):
        for column in record.__table__.columns:
            value = getattr(record, column.name)
            for word in (*CLOSED_SET_WORDS, "open", "closed"):
                if isinstance(value, bytes):
                    assert word.encode() not in value, (column.name, word)

    raw = raw_storage(db, settings)
    # Controls: the scan sees plain columns and the sealed care rows themselves.
    assert "测试学校甲".encode() in raw
    assert case.code.encode() in raw
    sealed = as_bytes(case.open_reason)
    assert sealed in raw or sealed.hex().encode() in raw.lower()
    assert str(written.case_id).replace("-", "").encode() in raw.replace(b"-", b"") or (
        str(written.case_id).encode() in raw
    )

    assert leaked(raw, markers()) == [], f"plaintext in the raw {db.backend} storage"
