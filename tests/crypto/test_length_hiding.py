"""Issue 5, finding 3 and acceptance 2: ciphertext lengths give no value away (SPEC P1),
old unpadded (format 1) fields still open, and resealing leaves none behind."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from datetime import date
from typing import Any

from click.testing import CliRunner
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.crypto.envelope import (
    ALG_AES_256_GCM,
    FORMAT_V1,
    FORMAT_V2,
    NONCE_BYTES,
    unwrap_data_key,
)
from casemgr.crypto.models import DataKey
from casemgr.crypto.sealed import sealed_columns
from casemgr.students.models import Student
from tests.factories import national_id

STUDENT_COLUMNS = list(sealed_columns(Student))


def _student(n: int, **overrides: Any) -> dict[str, Any]:
    birth = date(2012, 1 + n % 12, 1 + n % 27)
    body: dict[str, Any] = {
        "full_name": "王明",
        "gender": "female",
        "birth_date": birth.isoformat(),
        "student_no": f"LEN{n:04d}",
        "national_id": national_id(birth, n, region="440305"),
        "address": "广东省深圳市南山区科技园路1号",
        "guardians": [{"name": "王大明", "relation": "父亲", "phone": "13800138000"}],
    }
    body.update(overrides)
    return body


def raw_lengths(db: Any) -> dict[str, set[int]]:
    lengths: dict[str, set[int]] = defaultdict(set)
    for row in db.execute(f"SELECT {', '.join(STUDENT_COLUMNS)} FROM students"):
        for column, value in zip(STUDENT_COLUMNS, row, strict=True):
            lengths[column].add(-1 if value is None else len(bytes(value)))
    return lengths


def test_lengths_do_not_tell_gender_name_length_guardians_or_id_presence(client, world, db):
    """The review named every student's gender from ciphertext length; now nothing differs."""
    db.execute("DELETE FROM students")  # only the rows written here are compared
    variants = [
        _student(1),
        _student(2, gender="male", full_name="欧阳小明"),
        _student(3, national_id=None, address=None, guardians=None),
        _student(
            4,
            gender="male",
            full_name="李四",
            guardians=[
                {"name": "李某某", "relation": "母亲", "phone": "13900139000"},
                {"name": "李某", "relation": "祖父", "phone": "13700137000"},
                {"name": "张某某", "relation": "外祖母", "phone": "+86 136 0013 6000"},
            ],
        ),
        _student(5, full_name="Ann Li", address="北京市朝阳区1号"),
    ]
    for body in variants:
        r = client.post(
            "/api/v1/students",
            json={"class_id": str(world.class_a1), **body},
            headers=world["ct_a1"].headers,
        )
        assert r.status_code == 201, r.text
    lengths = raw_lengths(db)
    for column in STUDENT_COLUMNS:
        assert len(lengths[column]) == 1, f"students.{column} lengths differ: {lengths[column]}"
    # Nothing is NULL either: an absent national ID is sealed, and its index is random.
    rows = db.execute("SELECT national_id_bidx FROM students")
    assert all(row[0] is not None for row in rows)
    assert len({bytes(row[0]) for row in rows}) == len(rows)


def test_a_long_name_reveals_only_its_bucket(client, world, db):
    db.execute("DELETE FROM students")
    for n, name in enumerate(["王明", "欧阳小明", "阿卜杜热合曼·买买提明"]):
        r = client.post(
            "/api/v1/students",
            json={"class_id": str(world.class_a1), **_student(10 + n, full_name=name)},
            headers=world["ct_a1"].headers,
        )
        assert r.status_code == 201, r.text
    sizes = sorted(len(bytes(r[0])) for r in db.execute("SELECT full_name FROM students"))
    assert sizes[0] == sizes[1] < sizes[2]


def _seal_v1(key: bytes, key_id: uuid.UUID, column: str, row_id: uuid.UUID, value: str) -> bytes:
    header = bytes((FORMAT_V1, ALG_AES_256_GCM)) + key_id.bytes
    nonce = os.urandom(NONCE_BYTES)
    aad = header + b"|" + f"students.{column}.{row_id}".encode()
    return header + nonce + AESGCM(key).encrypt(nonce, value.encode(), aad)


def _downgrade_to_format_1(db: Any, student_id: uuid.UUID) -> None:
    """Rewrite a student's fields as the foundation stored them: unpadded, NULL if absent."""

    async def body(session: AsyncSession) -> None:
        student = await session.get(Student, student_id)
        assert student is not None
        key = await session.get(DataKey, student.data_key_id)
        assert key is not None and key.wrapped is not None and key.kek_version is not None
        cipher = await db.crypto.cipher(session, student.data_key_id)
        values = cipher.open_fields(student)
        data_key = unwrap_data_key(db.keyring.kek(key.kek_version), key.id, key.wrapped)
        text = {
            "full_name": values["full_name"],
            "gender": values["gender"],
            "birth_date": values["birth_date"].isoformat(),
            "student_no": values["student_no"],
            "address": values["address"],
        }
        for column, value in text.items():
            setattr(student, column, _seal_v1(data_key, key.id, column, student.id, value))
        student.national_id = None
        student.national_id_bidx = None
        student.guardians = None

    db.in_transaction(body)


def _formats(db: Any) -> set[int]:
    found = set()
    for row in db.execute(f"SELECT {', '.join(STUDENT_COLUMNS)} FROM students"):
        for value in row:
            assert value is not None, "a sealed column was left NULL"
            found.add(bytes(value)[0])
    return found


def test_format_1_fields_still_open_and_reseal_leaves_none(client, world, db, settings):
    from casemgr.cli import main

    student_id = world.students["a1_first"]
    _downgrade_to_format_1(db, student_id)
    # Old ciphertexts still open through the API.
    r = client.get(f"/api/v1/students/{student_id}", headers=world["ct_a1"].headers)
    assert r.status_code == 200, r.text
    assert r.json()["full_name"] == "测试学生001"
    assert r.json()["national_id"] is None
    assert FORMAT_V1 in {bytes(r[0])[0] for r in db.execute("SELECT full_name FROM students")}

    env = {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(settings.var_dir),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
    }
    result = CliRunner().invoke(main, ["keys", "reseal", "--batch-size", "2"], env=env)
    assert result.exit_code == 0, result.output
    # A raw scan of the header bytes: every sealed field of every row is format 2 now.
    assert _formats(db) == {FORMAT_V2}
    r = client.get(f"/api/v1/students/{student_id}", headers=world["ct_a1"].headers)
    assert r.json()["full_name"] == "测试学生001"
    assert r.json()["national_id"] is None and r.json()["guardians"] == []
    # Idempotent: a second run finds nothing to do.
    again = CliRunner().invoke(main, ["keys", "reseal"], env=env)
    assert again.exit_code == 0, again.output
    assert '"students":0' in again.output.replace(" ", "")


def test_rotation_also_reseals(client, world, db, settings):
    from casemgr.cli import main

    _downgrade_to_format_1(db, world.students["a1_second"])
    env = {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(settings.var_dir),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
    }
    result = CliRunner().invoke(main, ["keys", "rotate"], env=env)
    assert result.exit_code == 0, result.output
    assert _formats(db) == {FORMAT_V2}


def test_erased_students_are_left_alone_by_reseal(db, world):
    """A destroyed key opens nothing: its rows are skipped, not an error."""
    from casemgr.crypto.reseal import reseal

    student_id = world.students["b1_first"]
    _downgrade_to_format_1(db, student_id)

    async def shred(session: AsyncSession) -> None:
        key_id = await session.scalar(select(Student.data_key_id).where(Student.id == student_id))
        assert key_id is not None
        await db.crypto.shred(session, key_id)

    db.in_transaction(shred)
    counts = db.run(lambda sessions: reseal(sessions, db.crypto))
    assert counts["students"] == 0
