"""Acceptance 5 (SPEC P5): erasing a student destroys the student's data key.

Afterwards every route answers 404 for the student, nothing of it decrypts with the live
key ring, a raw scan of the database finds no marker, and the audit trail still verifies.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.care.models import (
    CareCategory,
    CaseFile,
    Guidance,
    HomeVisit,
    Pairing,
    SupportLog,
    Task,
)
from casemgr.crypto import DataKeyDestroyed, DecryptionError
from casemgr.crypto.envelope import key_id_of
from casemgr.crypto.models import DataKey
from casemgr.crypto.sealed import sealed_columns
from casemgr.students.models import Student
from tests.care.helpers import day, events
from tests.care.markers import markers, write_whole_record
from tests.care.test_raw_storage_scan import leaked, raw_storage
from tests.factories import student_payload

RECORDS = (Student, CaseFile, CareCategory, Pairing, SupportLog, HomeVisit, Guidance, Task)


def sealed_blobs(db: Any, student_id: uuid.UUID) -> list[tuple[str, str, uuid.UUID, bytes]]:
    """Every sealed value held about the student: (table, column, row id, ciphertext)."""

    async def body(session: AsyncSession) -> list[tuple[str, str, uuid.UUID, bytes]]:
        found = []
        for model in RECORDS:
            owner = model.id if model is Student else model.student_id
            for record in await session.scalars(select(model).where(owner == student_id)):
                for column in sealed_columns(model):
                    blob = getattr(record, column)
                    if blob is not None:
                        found.append((model.__tablename__, column, record.id, bytes(blob)))
        return found

    return db.in_transaction(body)


def test_erasure_leaves_nothing_readable_and_the_trail_verifies(care, world, db, settings):
    written = write_whole_record(care, world, db, settings, "a1_first")
    student_id = written.student_id
    path = f"/api/v1/students/{student_id}"
    blobs = sealed_blobs(db, student_id)
    tables = {table for table, *_ in blobs}
    assert tables == {t.__tablename__ for t in RECORDS}, tables
    key_ids = {key_id_of(blob) for *_, blob in blobs}
    assert len(key_ids) == 1  # everything about the student is sealed under one key

    # Only the school leader erases; a bad reason changes nothing.
    for who in ("ct_a1", "counselor_a", "teacher_a", "admin", "auditor"):
        care.call(who, "POST", f"{path}/erase", {"reason": "guardian_request"}, expect=403)
    care.call("leader_a", "POST", f"{path}/erase", {"reason": "because"}, expect=422)
    care.call("ct_b1", "POST", f"{path}/erase", {"reason": "guardian_request"}, expect=403)
    assert care.call("ct_a1", "GET", path).status_code == 200
    care.call("leader_a", "POST", f"{path}/erase", {"reason": "guardian_request"}, expect=204)
    erased = events(db, "student:erase")[-1]
    assert erased.outcome == "allow" and erased.student_id == student_id
    assert erased.detail == '{"reason":"guardian_request"}'

    # Every route answers 404, exactly as for a student that never existed.
    case = written.case_id
    missing = uuid.uuid4()
    for who, method, route, body in (
        ("ct_a1", "GET", path, None),
        ("ct_a1", "GET", f"{path}/export", None),
        ("ct_a1", "GET", f"{path}/home-visits", None),
        ("ct_a1", "POST", f"{path}/home-visits", None),
        ("ct_a1", "POST", f"{path}/care-categories", None),
        ("teacher_a", "POST", f"{path}/emergency-access", None),
        ("leader_a", "POST", f"{path}/erase", {"reason": "guardian_request"}),
        ("leader_a", "PATCH", path, {"address": "x"}),
        ("counselor_a", "GET", f"/api/v1/cases/{case}", None),
        ("counselor_a", "GET", f"/api/v1/cases/{case}/timeline", None),
        ("counselor_a", "GET", f"/api/v1/cases/{case}/support-logs", None),
        ("counselor_a", "GET", f"/api/v1/cases/{case}/pairings", None),
        ("counselor_a", "POST", f"/api/v1/cases/{case}/close", {"reason": "x"}),
    ):
        if body is None and method == "POST":
            body = {
                "home-visits": {
                    "visited_on": day(0),
                    "participant_ids": [],
                    "mode": "phone",
                    "notes": "n",
                },
                "care-categories": {"category": "orphan", "since": day(-1), "details": ""},
                "emergency-access": {"reason": "A reason long enough to be considered."},
            }[route.rsplit("/", 1)[-1]]
        r = care.call(who, method, route, body, expect=404)
        gone = care.call(
            who,
            method,
            route.replace(str(student_id), str(missing)).replace(str(case), str(missing)),
            body,
            expect=404,
        )
        assert r.content == gone.content, route
    care.call(
        "counselor_a",
        "POST",
        "/api/v1/cases",
        {"student_id": str(student_id), "reason": "Reopening."},
        expect=404,
    )
    assert care.ok("ct_a1", "GET", "/api/v1/cases?include_earlier=true")["items"] == []
    assert all(
        t.get("student_id") != str(student_id)
        for who in ("ct_a1", "teacher_a", "counselor_a")
        for t in care.tasks(who)
    )
    roster = care.ok("ct_a1", "GET", f"/api/v1/classes/{world.class_a1}/students")["items"]
    assert str(student_id) not in [s["id"] for s in roster]
    # The student number and national ID no longer match anything.
    assert (
        care.ok("ct_a1", "POST", "/api/v1/students/lookup", {"student_no": "NO00001"})["items"]
        == []
    )

    # Nothing decrypts: the student's key is gone, and no live key opens any of it.
    async def attempt(session: AsyncSession) -> int:
        (key_id,) = key_ids
        with pytest.raises(DataKeyDestroyed):
            await db.crypto.cipher(session, key_id)
        live = (
            await session.execute(
                select(DataKey.id, DataKey.kek_version, DataKey.wrapped).where(
                    DataKey.wrapped.is_not(None)
                )
            )
        ).all()
        tried = 0
        for row in live:
            cipher = db.crypto.open_data_key(row.id, row.kek_version, row.wrapped)
            for table, column, row_id, blob in sealed_blobs_now:
                with pytest.raises(DecryptionError):
                    cipher.open_payload(table, column, row_id, blob)
                tried += 1
        return tried

    sealed_blobs_now = sealed_blobs(db, student_id)
    assert len(sealed_blobs_now) == len(blobs)  # the ciphertext is there, and useless
    assert db.in_transaction(attempt) > 0

    # The emergency access's reason (sealed under a system key) is withheld too.
    grants = care.ok("auditor", "GET", "/api/v1/audit/emergency-access")["items"]
    assert [g["reason"] for g in grants] == ["[withheld: the student's record was erased]"]
    assert grants[0]["review_note"] is None

    raw = raw_storage(db, settings)
    assert leaked(raw, markers()) == []

    async def verify(session: AsyncSession) -> Any:
        return await audit.verify_chain(
            session,
            db.keyring.audit_public_keys,
            settings.checkpoint_file,
            seal_deadline=settings.seal_deadline,
        )

    assert db.in_transaction(verify).ok

    # The number is free again: the student can be registered anew (say, enrolled in error).
    again = care.call(
        "ct_a1",
        "POST",
        "/api/v1/students",
        student_payload(world.class_a1, 1),
        expect=201,
    )
    assert again.json()["id"] != str(student_id)


def test_erased_rows_stay_for_the_trail_but_pairings_and_tasks_are_over(care, world, db, settings):
    written = write_whole_record(care, world, db, settings, "a1_first")
    care.call(
        "leader_a",
        "POST",
        f"/api/v1/students/{written.student_id}/erase",
        {"reason": "enrolled_in_error"},
        expect=204,
    )
    sid = db.id(written.student_id)
    assert db.execute(
        "SELECT COUNT(*) FROM pairings WHERE student_id = :s AND ended_at IS NULL", {"s": sid}
    ) == [(0,)]
    assert db.execute(
        "SELECT COUNT(*) FROM tasks WHERE student_id = :s AND done_at IS NULL", {"s": sid}
    ) == [(0,)]
    destroyed = db.execute(
        "SELECT dk.wrapped, dk.destroyed_at FROM data_keys dk"
        " JOIN students s ON s.data_key_id = dk.id WHERE s.id = :s",
        {"s": sid},
    )
    assert destroyed[0][0] is None and destroyed[0][1] is not None
    # The file's row and its code stay (the trail names them); its content does not.
    assert db.execute("SELECT COUNT(*) FROM case_files WHERE student_id = :s", {"s": sid}) == [(1,)]
