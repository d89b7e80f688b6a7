"""The database itself refuses to change or remove audit records (SPEC P4)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from casemgr.settings import Settings
from tests.audit.helpers import append_events, checkpoint, events, verify

STATEMENTS = [
    "UPDATE audit_events SET outcome = 'deny'",
    "UPDATE audit_events SET action = 'auth:login' WHERE seq = 2",
    "DELETE FROM audit_events",
    "DELETE FROM audit_events WHERE seq = 3",
    "UPDATE audit_checkpoints SET seq = seq + 100",
    "DELETE FROM audit_checkpoints",
]


@pytest.fixture
def sealed_chain(db: Any, settings: Settings) -> list[dict[str, Any]]:
    """Four events and a checkpoint, so that row triggers have rows to fire on."""
    append_events(db, 4)
    checkpoint(db, settings)
    return events(db)


def _unchanged(db: Any, settings: Settings, before: list[dict[str, Any]]) -> None:
    assert events(db) == before
    assert db.execute("SELECT count(*) FROM audit_checkpoints")[0][0] == 1
    assert verify(db, settings).ok


def test_database_refuses_update_and_delete_on_audit_tables(
    db: Any, settings: Settings, sealed_chain: list[dict[str, Any]]
) -> None:
    for statement in STATEMENTS:
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(statement)
    _unchanged(db, settings, sealed_chain)


def test_postgresql_refuses_truncate_on_audit_tables(
    db: Any, settings: Settings, sealed_chain: list[dict[str, Any]]
) -> None:
    if db.backend == "sqlite":
        pytest.skip("SQLite has no TRUNCATE; DELETE without WHERE is covered above")
    for table in ("audit_events", "audit_checkpoints"):
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(f"TRUNCATE {table}")
    _unchanged(db, settings, sealed_chain)


def test_appending_is_still_allowed(
    db: Any, settings: Settings, sealed_chain: list[dict[str, Any]]
) -> None:
    append_events(db, 2)
    checkpoint(db, settings)
    assert [e["seq"] for e in events(db)] == [1, 2, 3, 4, 5, 6]
    assert db.execute("SELECT count(*) FROM audit_checkpoints")[0][0] == 2
    assert verify(db, settings).ok
