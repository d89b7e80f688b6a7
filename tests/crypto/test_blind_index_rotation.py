"""Issue 5, finding 5: the blind-index key rotates (resumable), lookups keep working while
rows move, and the old key can be retired once nothing uses it."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.crypto import Crypto, KeyRing
from casemgr.crypto import rotation as rotation_module
from casemgr.crypto.rotation import rotate_blind_index
from tests.factories import student_payload


class Interrupted(Exception):
    pass


def lookup(client: Any, world: Any, **query: str) -> list[str]:
    r = client.post("/api/v1/students/lookup", json=query, headers=world["ct_a1"].headers)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def versions(db: Any) -> list[int]:
    return sorted(row[0] for row in db.execute("SELECT bidx_version FROM students"))


def cli(settings: Any, *args: str) -> Any:
    from casemgr.cli import main

    env = {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(settings.var_dir),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
    }
    return CliRunner().invoke(main, list(args), env=env)


def test_rotation_resumes_and_lookups_work_throughout(client, world, db, settings, monkeypatch):
    a1 = str(world.students["a1_first"])
    a1_payload = student_payload(world.class_a1, 1)
    assert versions(db) == [1, 1, 1, 1]

    # Crash after the first batch of one row.
    real_reindex = rotation_module._reindex
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise Interrupted
        real_reindex(*args, **kwargs)

    monkeypatch.setattr(rotation_module, "_reindex", crashing)
    crypto = Crypto(KeyRing(settings.keys_dir))
    with pytest.raises(Interrupted):
        db.run(lambda sessions: rotate_blind_index(sessions, crypto, batch_size=1))
    monkeypatch.setattr(rotation_module, "_reindex", real_reindex)
    assert versions(db) == [1, 1, 1, 2]

    # Half moved: the service (a fresh key ring sees both keys) finds every student.
    assert lookup(client, world, student_no=a1_payload["student_no"]) == [a1]
    assert lookup(client, world, national_id=a1_payload["national_id"]) == [a1]
    second = student_payload(world.class_a1, 2)
    assert lookup(client, world, student_no=second["student_no"]) == [
        str(world.students["a1_second"])
    ]
    # A student created now is indexed under the new key at once.
    created = client.post(
        "/api/v1/students",
        json=student_payload(world.class_a1, 50),
        headers=world["ct_a1"].headers,
    )
    assert created.status_code == 201, created.text

    result = cli(settings, "keys", "rotate", "--blind-index")
    assert result.exit_code == 0, result.output
    assert '"resumed":true' in result.output.replace(" ", "")
    assert versions(db) == [2, 2, 2, 2, 2]
    assert lookup(client, world, student_no=a1_payload["student_no"]) == [a1]

    # The old key is no longer needed: retiring it keeps lookups working.
    refused = cli(settings, "keys", "retire", "--blind-index", "2")
    assert refused.exit_code != 0
    retired = cli(settings, "keys", "retire", "--blind-index", "1")
    assert retired.exit_code == 0, retired.output
    assert not (settings.keys_dir / "blind-index.key").exists()
    assert lookup(client, world, student_no=a1_payload["student_no"]) == [a1]
    assert lookup(client, world, national_id=a1_payload["national_id"]) == [a1]
    assert lookup(client, world, student_no="NO-SUCH-NUMBER") == []


def test_retiring_a_blind_index_key_in_use_is_refused(world, db, settings):
    result = cli(settings, "keys", "retire", "--blind-index", "1")
    assert result.exit_code != 0
    assert (settings.keys_dir / "blind-index.key").exists()


def test_retiring_a_kek_in_use_is_refused_and_an_unused_one_is_destroyed(world, db, settings):
    assert cli(settings, "keys", "retire", "1").exit_code != 0
    assert cli(settings, "keys", "rotate").exit_code == 0
    assert cli(settings, "keys", "retire", "2").exit_code != 0  # the current one
    result = cli(settings, "keys", "retire", "1")
    assert result.exit_code == 0, result.output
    assert not (settings.keys_dir / "kek-0001.key").exists()

    async def readable(session: AsyncSession) -> int:
        from sqlalchemy import select

        from casemgr.students.models import Student

        students = list(await session.scalars(select(Student)))
        ring = Crypto(KeyRing(settings.keys_dir))
        ciphers = await ring.ciphers(session, [s.data_key_id for s in students])
        return sum(1 for s in students if ciphers[s.data_key_id].open_field(s, "full_name"))

    assert db.in_transaction(readable) == 4
