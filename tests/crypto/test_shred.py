"""Crypto-shredding (SPEC P5): destroying a student's data key makes every field sealed
under it unreadable for good, while the audit trail stays verifiable."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from casemgr import audit
from casemgr.crypto import DataKeyDestroyed
from casemgr.students.models import Student
from casemgr.students.services import details


def test_shredded_student_cannot_be_decrypted_and_the_trail_still_verifies(world, db, settings):
    student_id = world.students["a1_first"]

    async def key_of(session):
        return (await session.get(Student, student_id)).data_key_id

    key_id = db.in_transaction(key_of)

    async def readable(session):
        student = await session.get(Student, student_id)
        return details(await db.crypto.cipher(session, student.data_key_id), student).full_name

    assert db.in_transaction(readable)  # control: readable before
    db.in_transaction(lambda session: db.crypto.shred(session, key_id))

    with pytest.raises(DataKeyDestroyed):
        db.in_transaction(readable)
    row = db.execute(
        "SELECT wrapped, kek_version, destroyed_at FROM data_keys WHERE id = :id",
        {"id": db.id(key_id)},
    )[0]
    assert row[0] is None and row[1] is None and row[2] is not None
    # Other students are untouched.
    other = world.students["a1_second"]

    async def other_readable(session):
        student = await session.get(Student, other)
        return details(await db.crypto.cipher(session, student.data_key_id), student).full_name

    assert db.in_transaction(other_readable)

    async def verify(session):
        return await audit.verify_chain(
            session,
            db.keyring.audit_public_keys,
            settings.checkpoint_file,
            seal_deadline=settings.seal_deadline,
        )

    assert db.in_transaction(verify).ok


def test_an_old_backup_of_the_key_row_is_useless_without_the_kek_version_it_names(world, db):
    """Shredding is final because the KEK is rotated away afterwards: a backup of the old
    wrapped key opens only under a KEK version that rotation lets the operator delete."""
    from casemgr.crypto import Crypto, KeyRing
    from casemgr.crypto.rotation import rotate

    student_id = world.students["a1_first"]

    async def wrapped_row(session):
        student = await session.get(Student, student_id)
        row = await session.execute(
            text("SELECT kek_version, wrapped FROM data_keys WHERE id = :id"),
            {"id": db.id(student.data_key_id)},
        )
        return student.data_key_id, row.one()

    key_id, (version, backup) = db.in_transaction(wrapped_row)
    db.in_transaction(lambda session: db.crypto.shred(session, key_id))
    db.run(lambda sessions: rotate(sessions, db.keyring))
    (db.settings.keys_dir / f"kek-{version:04d}.key").unlink()
    fresh = Crypto(KeyRing(db.settings.keys_dir))
    with pytest.raises(Exception, match="not in the key ring"):
        fresh.open_data_key(key_id, version, bytes(backup))
