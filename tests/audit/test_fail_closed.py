"""If the audit event cannot be written, the access fails and changes nothing (SPEC P4)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.audit.helpers import plaintexts
from tests.factories import student_payload


def break_audit_writes(db: Any, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "hash-fails":

        def broken(*_args: Any, **_kwargs: Any) -> bytes:
            raise RuntimeError("audit hashing unavailable")

        monkeypatch.setattr("casemgr.audit.services.event_hash", broken)
    elif db.backend == "sqlite":
        db.execute(
            "CREATE TRIGGER audit_events_unwritable BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END"
        )
    else:
        db.execute(
            "CREATE FUNCTION test_audit_unwritable() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit storage unavailable'; END; $$ LANGUAGE plpgsql"
        )
        db.execute(
            "CREATE TRIGGER audit_events_unwritable BEFORE INSERT ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION test_audit_unwritable()"
        )


def counts(db: Any) -> list[int]:
    """Rows in students, data_keys and audit_events."""
    return [
        db.execute(f"SELECT count(*) FROM {table}")[0][0]
        for table in ("students", "data_keys", "audit_events")
    ]


def assert_failed_without_content(response: Any, secrets: list[str]) -> None:
    assert response.status_code >= 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == response.status_code
    for value in secrets:
        assert value not in response.text


@pytest.mark.parametrize("how", ["database-refuses-insert", "hash-fails"])
def test_read_fails_when_its_audit_event_cannot_be_written(
    db: Any, world: Any, client: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    student = world.students["a1_first"]
    secrets = plaintexts(student_payload(world.class_a1, 1))
    url = f"/api/v1/students/{student}"
    # While the audit trail works, the same request returns the student.
    ok = client.get(url, headers=world["ct_a1"].headers)
    assert ok.status_code == 200
    assert ok.json()["full_name"] == secrets[0]

    break_audit_writes(db, monkeypatch, how)
    before = counts(db)
    response = client.get(url, headers=world["ct_a1"].headers)
    assert_failed_without_content(response, secrets)
    assert counts(db) == before


@pytest.mark.parametrize("how", ["database-refuses-insert", "hash-fails"])
def test_create_stores_nothing_when_its_audit_event_cannot_be_written(
    db: Any, world: Any, client: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    headers = world["ct_a1"].headers
    # While the audit trail works, a create stores a student (and its key and event).
    before = counts(db)
    created = client.post(
        "/api/v1/students", json=student_payload(world.class_a1, 76), headers=headers
    )
    assert created.status_code == 201
    assert counts(db) == [n + 1 for n in before]

    payload = student_payload(world.class_a1, 77)
    break_audit_writes(db, monkeypatch, how)
    before = counts(db)
    response = client.post("/api/v1/students", json=payload, headers=headers)
    assert_failed_without_content(response, plaintexts(payload))
    assert counts(db) == before
