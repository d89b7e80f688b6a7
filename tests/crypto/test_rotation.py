"""KEK rotation: every data key rewrapped, the old version no longer needed, resumable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar.testing import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.crypto import Crypto, KeyRing, KeyRingError
from casemgr.crypto.envelope import wrapped_kek_version
from casemgr.crypto.models import DataKey, KeyRotation
from casemgr.crypto.rotation import KeyStatus, key_status, rotate
from casemgr.students.models import Student
from casemgr.students.services import details
from tests.factories import PASSWORD

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROBE_TABLE = "probes"


class Interrupted(Exception):
    """Stands in for a crash between two batches."""


def fresh_crypto(db: Any) -> Crypto:
    """A new key ring read from disk, as a restarted service would load it."""
    return Crypto(KeyRing(db.settings.keys_dir))


def make_probes(db: Any, count: int) -> dict[uuid.UUID, bytes]:
    """Create ``count`` data keys, each sealing one value; return key id -> ciphertext."""

    async def body(session: AsyncSession) -> dict[uuid.UUID, bytes]:
        probes = {}
        for n in range(count):
            cipher = db.crypto.new_data_key(session, "student")
            probes[cipher.key_id] = cipher.seal(PROBE_TABLE, "value", cipher.key_id, f"值{n}")
        return probes

    return db.in_transaction(body)


def open_probes(db: Any, probes: dict[uuid.UUID, bytes], crypto: Crypto | None = None) -> int:
    """Open every probe with a key ring freshly loaded from disk; return how many opened."""
    crypto = crypto or fresh_crypto(db)

    async def body(session: AsyncSession) -> int:
        ciphers = await crypto.ciphers(session, list(probes))
        assert set(ciphers) == set(probes)
        values = {
            cipher.open(PROBE_TABLE, "value", kid, probes[kid]) for kid, cipher in ciphers.items()
        }
        assert values == {f"值{n}" for n in range(len(probes))}
        return len(values)

    return db.in_transaction(body)


def status(db: Any) -> KeyStatus:
    ring = KeyRing(db.settings.keys_dir)
    return db.in_transaction(lambda session: key_status(session, ring))


def rotations(db: Any) -> list[tuple[int, int, bool]]:
    """(target_version, rewrapped, finished) of every recorded rotation."""

    async def body(session: AsyncSession) -> list[tuple[int, int, bool]]:
        rows = await session.scalars(select(KeyRotation).order_by(KeyRotation.id))
        return [(r.target_version, r.rewrapped, r.finished_at is not None) for r in rows]

    return db.in_transaction(body)


def run_rotate(db: Any, **kwargs: Any) -> Any:
    ring = KeyRing(db.settings.keys_dir)
    return db.run(lambda sessions: rotate(sessions, ring, **kwargs))


def kek_files(db: Any) -> list[str]:
    return sorted(p.name for p in db.settings.keys_dir.glob("kek-*.key"))


def read_every_student(db: Any, crypto: Crypto) -> dict[uuid.UUID, Any]:
    async def body(session: AsyncSession) -> dict[uuid.UUID, Any]:
        students = list(await session.scalars(select(Student)))
        return {s.id: details(await crypto.cipher(session, s.data_key_id), s) for s in students}

    return db.in_transaction(body)


def test_rotation_rewraps_every_key_and_the_old_kek_is_then_not_needed(
    db: Any, world: Any, settings: Any
) -> None:
    before = read_every_student(db, db.crypto)
    assert len(before) == 4
    total = db.in_transaction(lambda s: s.scalar(select(func.count()).select_from(DataKey)))
    assert status(db).keys_by_version == {1: total}

    result = run_rotate(db, batch_size=3)

    assert (result.target_version, result.rewrapped, result.resumed) == (2, total, False)
    after = status(db)
    assert after.current_version == 2
    assert after.keys_by_version == {2: total}
    assert after.rotation_in_progress is None
    assert after.versions_not_needed == [1]
    wrapped = db.in_transaction(lambda s: s.scalars(select(DataKey.wrapped)))
    assert {wrapped_kek_version(w) for w in wrapped} == {2}
    assert rotations(db) == [(2, total, True)]

    # Retire version 1: a service started now has no way to use it.
    (settings.keys_dir / "kek-0001.key").unlink()
    crypto = fresh_crypto(db)
    assert crypto.keyring.kek_versions == [2]
    assert read_every_student(db, crypto) == before

    from casemgr.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for name in ("a1_first", "a1_second"):
            student_id = world.students[name]
            response = client.get(f"/api/v1/students/{student_id}", headers=world["ct_a1"].headers)
            assert response.status_code == 200, response.text
            assert response.json()["full_name"] == before[student_id].full_name
            assert response.json()["national_id"] == before[student_id].national_id
        # The TOTP secret of an account is sealed under a system data key: still readable.
        counselor = world["counselor_a"]
        login = client.post(
            "/api/v1/auth/login",
            json={"username": "counselor_a", "password": PASSWORD, "totp": counselor.totp_now()},
        )
        assert login.status_code == 200, login.text


def test_each_rotation_adds_a_version_and_new_keys_use_the_newest(db: Any) -> None:
    probes = make_probes(db, 5)
    assert run_rotate(db).target_version == 2
    assert run_rotate(db).target_version == 3
    assert kek_files(db) == ["kek-0001.key", "kek-0002.key", "kek-0003.key"]
    assert rotations(db) == [(2, 5, True), (3, 5, True)]
    assert status(db).versions_not_needed == [1, 2]

    later = make_probes(db, 1)
    versions = db.in_transaction(
        lambda s: s.scalars(select(DataKey.kek_version).where(DataKey.id.in_(list(later))))
    )
    assert list(versions) == [3]
    for name in ("kek-0001.key", "kek-0002.key"):
        (db.settings.keys_dir / name).unlink()
    assert open_probes(db, probes) == 5


def test_destroyed_keys_are_skipped_and_counted(db: Any) -> None:
    probes = make_probes(db, 4)
    shredded = next(iter(probes))
    db.in_transaction(lambda s: db.crypto.shred(s, shredded))
    result = run_rotate(db)
    assert result.rewrapped == 3
    after = status(db)
    assert after.keys_by_version == {2: 3}
    assert after.destroyed_keys == 1


def interrupt_after(batches: int) -> Any:
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if len(calls) > batches:  # the first call, (0, total), comes before any batch
            raise Interrupted

    return progress, calls


@pytest.mark.parametrize("batches_before_crash", [1, 2])
def test_interrupted_rotation_resumes_the_same_version(db: Any, batches_before_crash: int) -> None:
    probes = make_probes(db, 50)
    progress, calls = interrupt_after(batches_before_crash)
    with pytest.raises(Interrupted):
        run_rotate(db, batch_size=10, progress=progress)
    moved = 10 * batches_before_crash
    assert calls[-1] == (moved, 50)

    # Half-way: the rotation row is unfinished and the keys are split between versions...
    assert rotations(db) == [(2, moved, False)]
    half = status(db)
    assert half.keys_by_version == {1: 50 - moved, 2: moved}
    assert half.rotation_in_progress == 2
    assert half.versions_not_needed == []
    # ...and every key still opens (the service stays online during a rotation).
    assert open_probes(db, probes) == 50

    result = run_rotate(db, batch_size=10)

    assert (result.target_version, result.rewrapped, result.resumed) == (2, 50, True)
    assert rotations(db) == [(2, 50, True)]
    assert kek_files(db) == ["kek-0001.key", "kek-0002.key"]  # no third version
    assert status(db).keys_by_version == {2: 50}
    (db.settings.keys_dir / "kek-0001.key").unlink()
    assert open_probes(db, probes) == 50


def test_rotation_interrupted_before_its_kek_file_existed_creates_it_on_resume(db: Any) -> None:
    probes = make_probes(db, 12)
    progress, _ = interrupt_after(0)
    with pytest.raises(Interrupted):
        run_rotate(db, batch_size=5, progress=progress)
    # Simulate a crash between recording the rotation and writing its key file.
    (db.settings.keys_dir / "kek-0002.key").unlink()
    assert rotations(db) == [(2, 0, False)]
    assert status(db).keys_by_version == {1: 12}

    result = run_rotate(db, batch_size=5)

    assert (result.target_version, result.rewrapped, result.resumed) == (2, 12, True)
    kek2 = db.settings.keys_dir / "kek-0002.key"
    assert kek2.stat().st_mode & 0o777 == 0o600
    (db.settings.keys_dir / "kek-0001.key").unlink()
    assert open_probes(db, probes) == 12


def test_rotation_refuses_to_replace_a_lost_kek_that_keys_use(db: Any) -> None:
    """Writing a fresh key under a version that already wraps keys would hide the loss."""
    make_probes(db, 12)
    progress, _ = interrupt_after(1)
    with pytest.raises(Interrupted):
        run_rotate(db, batch_size=5, progress=progress)
    (db.settings.keys_dir / "kek-0002.key").unlink()

    with pytest.raises(KeyRingError, match="version 2 is missing"):
        run_rotate(db, batch_size=5)

    assert kek_files(db) == ["kek-0001.key"]
    assert status(db).keys_by_version == {1: 7, 2: 5}
    assert rotations(db) == [(2, 5, False)]


def cli_env(db: Any) -> dict[str, str]:
    return {
        "CASEMGR_DATABASE_URL": db.settings.database_url,
        "CASEMGR_KEYS_DIR": str(db.settings.keys_dir),
        "CASEMGR_VAR_DIR": str(db.settings.var_dir),
    }


def cli(db: Any, *args: str) -> dict[str, Any]:
    from casemgr.cli import main

    result = CliRunner().invoke(main, list(args), env=cli_env(db))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_keys_rotate_and_status(db: Any) -> None:
    probes = make_probes(db, 7)
    assert cli(db, "keys", "status") == {
        "current_version": 1,
        "versions_on_disk": [1],
        "keys_by_version": {"1": 7},
        "destroyed_keys": 0,
        "rotation_in_progress": None,
        "versions_not_needed": [],
    }

    assert cli(db, "keys", "rotate", "--batch-size", "3") == {
        "kek_version": 2,
        "rewrapped": 7,
        "resumed": False,
        "resealed": 0,
    }

    assert cli(db, "keys", "status") == {
        "current_version": 2,
        "versions_on_disk": [1, 2],
        "keys_by_version": {"2": 7},
        "destroyed_keys": 0,
        "rotation_in_progress": None,
        "versions_not_needed": [1],
    }
    events = db.execute("SELECT resource_id FROM audit_events WHERE action = 'keys:rotate'")
    assert [e.resource_id for e in events] == ["kek-2"]
    (db.settings.keys_dir / "kek-0001.key").unlink()
    assert open_probes(db, probes) == 7


KILL_TEST_KEYS = 600


def test_rotation_killed_mid_way_resumes_and_completes(db: Any, tmp_path: Path) -> None:
    """SIGKILL a running ``casemgr keys rotate`` after it committed a batch, then resume it.

    The kill happens while this test holds the rotation row locked (on SQLite: the write
    lock), so the rotator cannot commit another batch, let alone finish, in between.
    """
    probes = make_probes(db, KILL_TEST_KEYS)
    stderr_path = tmp_path / "rotate.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from casemgr.cli import main; main()",
                "keys",
                "rotate",
                "--batch-size",
                "5",
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ, **cli_env(db)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        killed_at = db.run(lambda sessions: kill_once_a_batch_is_committed(sessions, process))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert 0 < killed_at < KILL_TEST_KEYS
    assert rotations(db) == [(2, killed_at, False)]
    assert status(db).keys_by_version == {1: KILL_TEST_KEYS - killed_at, 2: killed_at}
    assert open_probes(db, probes) == KILL_TEST_KEYS  # both versions serve reads meanwhile

    resumed = cli(db, "keys", "rotate", "--batch-size", "100")
    assert resumed == {
        "kek_version": 2,
        "rewrapped": KILL_TEST_KEYS,
        "resumed": True,
        "resealed": 0,
    }
    assert rotations(db) == [(2, KILL_TEST_KEYS, True)]
    assert kek_files(db) == ["kek-0001.key", "kek-0002.key"]
    (db.settings.keys_dir / "kek-0001.key").unlink()
    assert open_probes(db, probes) == KILL_TEST_KEYS


async def kill_once_a_batch_is_committed(
    sessions: async_sessionmaker[AsyncSession], process: subprocess.Popen[bytes]
) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the rotation exited before it could be killed"
        async with sessions() as session, session.begin():
            # FOR UPDATE (BEGIN IMMEDIATE on SQLite) holds the rotator at its next batch.
            row = await session.scalar(select(KeyRotation).with_for_update())
            if row is not None:
                assert row.finished_at is None, "rotation finished before the kill: add keys"
                if row.rewrapped > 0:
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=30)
                    return row.rewrapped
        await asyncio.sleep(0.002)  # poll interval, not a synchronisation guess
    raise AssertionError("the rotation did not commit a batch within 30 s")


@pytest.mark.parametrize("backend", ["postgresql"])
def test_rotation_waits_for_a_key_locked_by_another_transaction(db: Any) -> None:
    """On PostgreSQL rotators skip locked rows to share work; a key that was locked by some
    other transaction must still be rewrapped before the rotation is marked finished."""
    probes = make_probes(db, 12)
    locked = sorted(probes)[0]
    ring = KeyRing(db.settings.keys_dir)

    async def body(sessions: async_sessionmaker[AsyncSession]) -> Any:
        holder = sessions()
        await holder.begin()
        await holder.execute(select(DataKey.id).where(DataKey.id == locked).with_for_update())
        holder_pid = await holder.scalar(text("SELECT pg_backend_pid()"))
        rotation = asyncio.create_task(rotate(sessions, ring, batch_size=5))
        # Release the lock only once the rotation waits on it (or has finished without it).
        deadline = time.monotonic() + 30
        async with sessions() as watcher:
            while not rotation.done() and time.monotonic() < deadline:
                waiting = await watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE :pid = ANY(pg_blocking_pids(pid))"
                    ),
                    {"pid": holder_pid},
                )
                await watcher.rollback()
                if waiting:
                    break
                await asyncio.sleep(0.002)
        await holder.rollback()
        await holder.close()
        return await rotation

    result = db.run(body)
    assert result.rewrapped == 12
    assert status(db).keys_by_version == {2: 12}
    (db.settings.keys_dir / "kek-0001.key").unlink()
    assert open_probes(db, probes) == 12
