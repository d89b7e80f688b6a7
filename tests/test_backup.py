"""Backups and restores (issue 11): every record type round-trips and the trail verifies;
the wrong key ring restores nothing; an erased student stays erased in an older backup
(the shred log, then key generations); the key ring's own backup. Both databases."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient
from sqlalchemy import select, text

from casemgr import audit
from casemgr.backup import KEYS_MAGIC, MANIFEST, ShredLog, backup_database
from casemgr.cli import main
from casemgr.crypto import Crypto, DataKeyDestroyed, KeyRing, KeyRingError, create_key_ring
from casemgr.crypto.models import DataKey
from casemgr.db import Base, create_engine, create_sessionmaker, transaction
from casemgr.settings import Settings
from casemgr.students.models import Student
from tests.conftest import _pg_admin, _pg_sqlalchemy_url
from tests.factories import student_payload

PASSPHRASE = "correct horse battery staple, twice over"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The service as deployed: erasures go to the shred log beside the checkpoints."""
    return dataclasses.replace(settings, shred_log_file=tmp_path / "var" / "shred-log.jsonl")


@pytest.fixture
def target(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database to restore into (a new host's, or a new PostgreSQL database)."""
    if backend == "sqlite":
        (tmp_path / "restored").mkdir()
        yield f"sqlite+aiosqlite:///{tmp_path / 'restored' / 'casemgr.db'}"
        return
    name = f"casemgr_r_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield _pg_sqlalchemy_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Cli:
    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.env = {
            "CASEMGR_DATABASE_URL": settings.database_url,
            "CASEMGR_KEYS_DIR": str(settings.keys_dir),
            "CASEMGR_VAR_DIR": str(tmp_path / "var"),
            "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
            "CASEMGR_AUDIT_CHECKPOINT_SECONDS": "0",
        }

    def __call__(self, *args: str, input: str | None = None, expect: int = 0, **env: str) -> Any:
        result = CliRunner().invoke(main, list(args), env={**self.env, **env}, input=input)
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    @staticmethod
    def json(result: Any) -> dict[str, Any]:
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Cli:
    return Cli(settings, tmp_path)


def elsewhere(tmp_path: Path, url: str, name: str = "host2") -> dict[str, str]:
    """The environment of a new host: the restore target and a var directory of its own."""
    var = tmp_path / name
    return {
        "CASEMGR_DATABASE_URL": url,
        "CASEMGR_VAR_DIR": str(var),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(var / "audit-checkpoints.jsonl"),
    }


def rows(url: str, table: Any, where: Any = None) -> list[Any]:
    async def body() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                query = select(table).order_by(*table.primary_key.columns)
                if where is not None:
                    query = query.where(where)
                return list(await connection.execute(query))
        finally:
            await engine.dispose()

    return asyncio.run(body())


def table_count(url: str) -> int:
    """How many tables the (PostgreSQL) database holds."""

    async def body() -> int:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                found = await connection.scalar(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                )
                return int(found or 0)
        finally:
            await engine.dispose()

    return asyncio.run(body())


def erase(settings: Settings, db: Any, account: Any, student_id: uuid.UUID) -> None:
    """Erase through the service, as the route does, with the service's shred log."""
    from casemgr.care.records import erase_student
    from tests.web.conftest import as_user

    assert settings.shred_log_file is not None
    original = db.crypto
    db.crypto = Crypto(db.keyring, on_shred=ShredLog(settings.shred_log_file).append_one)
    try:
        as_user(db, account, lambda ctx: erase_student(ctx, student_id, "guardian_request"))
    finally:
        db.crypto = original


def seed_demo(settings: Settings) -> list[dict[str, Any]]:
    from casemgr.demo import seed

    async def body() -> list[dict[str, Any]]:
        engine = create_engine(settings.database_url)
        try:
            return await seed(create_sessionmaker(engine), Crypto(KeyRing(settings.keys_dir)))
        finally:
            await engine.dispose()

    return asyncio.run(body())


def login(client: Any, entry: dict[str, Any]) -> dict[str, str]:
    body = {"username": entry["username"], "password": entry["password"]}
    if entry.get("totp_secret"):
        body["totp"] = pyotp.TOTP(entry["totp_secret"]).now()
    response = client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_every_record_type_round_trips_and_the_trail_verifies(
    settings, cli, target, tmp_path, backend
):
    from casemgr.app import create_app

    logins = {entry["role"]: entry for entry in seed_demo(settings)}
    with TestClient(create_app(settings)) as client:
        counselor = login(client, logins["counselor"])
        queue = client.get("/api/v1/screening/review-queue", headers=counselor).json()["items"]
        student_id = queue[0]["student_id"]
        note = client.post(
            f"/api/v1/students/{student_id}/counseling-notes",
            json={"notes": "Talked about sleep and friends."},
            headers=counselor,
        )
        assert note.status_code == 201, note.text
        result_before = client.get(
            f"/api/v1/screening/results/{queue[0]['result_id']}", headers=counselor
        ).json()
    cli("audit", "checkpoint")
    made = Cli.json(cli("backup", str(tmp_path / "backup")))
    assert made["backend"] == backend and made["schema_revision"]
    folder = tmp_path / "backup"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["audit"]["head_seq"] == made["audit_head_seq"]

    # A new host: no shred log there, so the backup's own copy is named.
    host = elsewhere(tmp_path, target)
    refused = cli("restore", str(folder), expect=1, **host)
    assert "no shred log" in refused.stderr
    restored = Cli.json(
        cli("restore", str(folder), "--shred-log", str(folder / "shred-log.jsonl"), **host)
    )
    assert restored["audit"]["ok"] is True and restored["shreds_replayed"] == 0
    assert restored["audit_head_seq"] == manifest["audit"]["head_seq"]
    assert Cli.json(cli("audit", "verify", **host))["ok"] is True

    # Every table holds what the source held at the backup; the trail is its prefix.
    head = manifest["audit"]["head_seq"]
    for table in Base.metadata.sorted_tables:
        if table.name in ("audit_head", "audit_checkpoints"):
            continue
        where = table.c.seq <= head if table.name == "audit_events" else None
        source = rows(settings.database_url, table, where)
        assert rows(target, table, where) == source, table.name
        if table.name not in ("auth_tokens", "login_throttle", "login_known_clients"):
            assert source or table.name in ("key_rotations", "transfer_requests"), table.name
    actions = [r.action for r in rows(target, audit_table(), audit_table().c.seq > head)]
    assert "backup:restore" in actions

    # The restored service opens what it held: logins, sealed fields, screening answers.
    restored_settings = dataclasses.replace(
        settings,
        database_url=target,
        var_dir=tmp_path / "host2",
        checkpoint_file=tmp_path / "host2" / "audit-checkpoints.jsonl",
    )
    with TestClient(create_app(restored_settings)) as client:
        # The token issued before the backup works (its TOTP code is spent, in both).
        assert client.get("/api/v1/me", headers=counselor).status_code == 200
        login(client, logins["class_teacher"])  # a password checked against its hash
        result_after = client.get(
            f"/api/v1/screening/results/{queue[0]['result_id']}", headers=counselor
        ).json()
        assert result_after == result_before
        notes = client.get(
            f"/api/v1/students/{student_id}/counseling-notes", headers=counselor
        ).json()["items"]
        assert [n["notes"] for n in notes] == ["Talked about sleep and friends."]


def audit_table() -> Any:
    return Base.metadata.tables["audit_events"]


def test_a_backup_taken_while_writes_go_on_is_consistent(settings, world, target, tmp_path):
    keyring = KeyRing(settings.keys_dir)

    async def body() -> tuple[Any, int]:
        engine = create_engine(settings.database_url)
        sessions = create_sessionmaker(engine)
        done = asyncio.Event()
        written = 0

        async def writer() -> None:
            nonlocal written
            while not done.is_set():
                async with transaction(sessions) as session:
                    await audit.record(
                        session, audit.Action.AUDIT_READ, actor=None, resource_type="audit"
                    )
                written += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(writer())
        try:
            await audit.seal(sessions, keyring, settings)
            result = await backup_database(settings, keyring, tmp_path / "backup")
        finally:
            done.set()
            await task
            await engine.dispose()
        return result, written

    result, written = asyncio.run(body())
    assert written > 0
    restore_settings = dataclasses.replace(
        settings,
        database_url=target,
        var_dir=tmp_path / "host2",
        checkpoint_file=tmp_path / "host2" / "audit-checkpoints.jsonl",
    )
    from casemgr.backup import restore_database

    restored = asyncio.run(
        restore_database(
            restore_settings,
            keyring,
            tmp_path / "backup",
            shred_logs=[tmp_path / "backup" / "shred-log.jsonl"],
        )
    )
    assert restored.verify.ok, restored.verify.reason
    head = result.manifest["audit"]["head_seq"]
    events = audit_table()
    assert rows(target, events, events.c.seq <= head) == rows(
        settings.database_url, events, events.c.seq <= head
    )


def test_the_wrong_key_ring_restores_nothing(settings, cli, world, target, tmp_path, backend):
    folder = tmp_path / "backup"
    cli("backup", str(folder))
    host = elsewhere(tmp_path, target)
    logs = ("--shred-log", str(folder / "shred-log.jsonl"))

    def nothing_restored() -> None:
        if backend == "sqlite":
            assert not (tmp_path / "restored" / "casemgr.db").exists()
            assert not list((tmp_path / "restored").iterdir())
        else:
            assert table_count(target) == 0
        assert not (tmp_path / "host2" / "audit-checkpoints.jsonl").exists()

    # Another deployment's key ring: its KEK does not unwrap the backup's data keys.
    other = tmp_path / "other-keys"
    create_key_ring(other)
    refused = cli("restore", str(folder), *logs, expect=1, CASEMGR_KEYS_DIR=str(other), **host)
    assert "does not open this backup's data keys" in refused.stderr
    nothing_restored()

    # The right KEK but another blind-index key: lookups would silently find nothing.
    mixed = tmp_path / "mixed-keys"
    shutil.copytree(settings.keys_dir, mixed)
    (mixed / "blind-index.key").unlink()
    shutil.copy2(other / "blind-index.key", mixed / "blind-index.key")
    refused = cli("restore", str(folder), *logs, expect=1, CASEMGR_KEYS_DIR=str(mixed), **host)
    assert "blind-index key version 1" in refused.stderr
    nothing_restored()

    # An altered manifest (a file's hash still right) is not signed by a trusted key.
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["created_at"] = "2020-01-01T00:00:00+00:00"
    os.chmod(folder / MANIFEST, 0o600)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    refused = cli("restore", str(folder), *logs, expect=1, **host)
    assert "not signed by any audit key" in refused.stderr
    nothing_restored()

    # A damaged database file.
    data_file = folder / manifest["database_file"]
    with data_file.open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff" * 8)
    refused = cli("restore", str(folder), *logs, expect=1, **host)
    assert "damaged" in refused.stderr
    nothing_restored()


def wrapped_key(url: str, student_id: uuid.UUID) -> tuple[uuid.UUID, int | None, bytes | None]:
    async def body() -> tuple[uuid.UUID, int | None, bytes | None]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                row = (
                    await connection.execute(
                        select(DataKey.id, DataKey.kek_version, DataKey.wrapped)
                        .join(Student, Student.data_key_id == DataKey.id)
                        .where(Student.id == student_id)
                    )
                ).one()
                return row.id, row.kek_version, row.wrapped
        finally:
            await engine.dispose()

    return asyncio.run(body())


def test_an_erased_student_stays_erased_in_an_older_backup(
    settings, cli, client, world, target, tmp_path, backend
):
    erased = world.students["a1_first"]
    kept = world.students["a1_second"]
    key_id, version, wrapped_before = wrapped_key(settings.database_url, erased)
    assert wrapped_before is not None and version == 1
    old = tmp_path / "old-backup"
    cli("backup", str(old))
    # A key-ring backup of this generation, kept elsewhere.
    (tmp_path / "vault").mkdir()
    cli(
        "backup",
        "--keys",
        str(tmp_path / "vault" / "keys.bak"),
        "--passphrase-stdin",
        input=PASSPHRASE + "\n",
    )

    response = client.post(
        f"/api/v1/students/{erased}/erase",
        json={"reason": "guardian_request"},
        headers=world["leader_a"].headers,
    )
    assert response.status_code == 204, response.text
    # The erasure logged the destroyed key before it committed.
    assert ShredLog(settings.shred_log_file).read() == {key_id}

    # 1. The shred log: the older backup restores without the erased student.
    host = elsewhere(tmp_path, target)
    restored = Cli.json(
        cli("restore", str(old), "--shred-log", str(settings.shred_log_file), **host)
    )
    assert restored["shreds_replayed"] == 1 and restored["audit"]["ok"] is True
    _, kek_version, wrapped = wrapped_key(target, erased)
    assert wrapped is None and kek_version is None
    keyring = KeyRing(settings.keys_dir)
    with pytest.raises(DataKeyDestroyed):
        Crypto(keyring).open_data_key(key_id, kek_version, wrapped)
    assert wrapped_key(target, kept)[2] is not None
    from casemgr.app import create_app

    restored_settings = dataclasses.replace(
        settings,
        database_url=target,
        var_dir=tmp_path / "host2",
        checkpoint_file=tmp_path / "host2" / "audit-checkpoints.jsonl",
    )
    with TestClient(create_app(restored_settings)) as other:
        ct = world["ct_a1"].headers
        assert other.get(f"/api/v1/students/{erased}", headers=ct).status_code == 404
        assert other.get(f"/api/v1/students/{kept}", headers=ct).status_code == 200
        lookup = other.post(
            "/api/v1/students/lookup",
            json={"student_no": student_payload(world.class_a1, 1)["student_no"]},
            headers=ct,
        )
        assert lookup.status_code == 200 and lookup.json()["items"] == []
    replay = [r for r in rows(target, audit_table()) if r.action == "keys:shred_replay"]
    assert [json.loads(r.detail) for r in replay] == [{"destroyed": 1, "students": 1}]

    # 2. Key generations: rotate and retire the KEK; no copy of the old backup opens then,
    # whoever restores it and whatever shred log they have or lack.
    Cli.json(cli("keys", "rotate"))
    assert Cli.json(cli("keys", "retire", "1"))["retired"] == "kek-0001.key"
    with pytest.raises(KeyRingError):
        Crypto(KeyRing(settings.keys_dir)).open_data_key(key_id, version, wrapped_before)
    if backend == "sqlite":  # the very bytes that the old backup holds
        copy = sqlite3.connect(old / "database.sqlite3")
        assert copy.execute(
            "SELECT wrapped FROM data_keys WHERE id = ?", (key_id.hex,)
        ).fetchone() == (wrapped_before,)
        copy.close()
    third = {**elsewhere(tmp_path, target, "host3")}
    if backend == "sqlite":
        third["CASEMGR_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'host3.db'}"
    else:
        asyncio.run(_pg_admin(f'DROP DATABASE "{target.rsplit("/", 1)[1]}" WITH (FORCE)'))
        asyncio.run(_pg_admin(f'CREATE DATABASE "{target.rsplit("/", 1)[1]}"'))
    refused = cli("restore", str(old), "--no-shred-log", expect=1, **third)
    assert "no key-encryption key version 1" in refused.stderr
    # The key-ring backup of that generation is what would still open it: it must be
    # destroyed with the retired key (docs/deployment.md).
    assert KEYS_MAGIC in (tmp_path / "vault" / "keys.bak").read_bytes()[: len(KEYS_MAGIC)]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_key_ring_backup(settings, cli, world, tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    dest = vault / "keys.bak"
    short = cli("backup", "--keys", str(dest), "--passphrase-stdin", input="too short\n", expect=1)
    assert "16 characters" in short.stderr and not dest.exists()
    made = Cli.json(
        cli("backup", "--keys", str(dest), "--passphrase-stdin", input=PASSPHRASE + "\n")
    )
    assert made["kek_versions"] == [1]
    data = dest.read_bytes()
    assert data.startswith(KEYS_MAGIC) and stat.S_IMODE(dest.stat().st_mode) == 0o600
    for path in settings.keys_dir.iterdir():
        if path.is_file() and path.name.endswith(".key"):
            secret = path.read_bytes().strip()
            assert secret not in data
    assert "keys:backup" in [r.action for r in rows(settings.database_url, audit_table())]
    # Never overwritten; never stored with database backups, in either direction.
    cli("backup", "--keys", str(dest), "--passphrase-stdin", input=PASSPHRASE + "\n", expect=1)
    refused = cli("backup", str(vault / "db"), expect=1)
    assert "never be stored together" in refused.stderr
    cli("backup", str(tmp_path / "shelf" / "db"))
    refused = cli(
        "backup",
        "--keys",
        str(tmp_path / "shelf" / "k.bak"),
        "--passphrase-stdin",
        input=PASSPHRASE + "\n",
        expect=1,
    )
    assert "never be stored together" in refused.stderr
    refused = cli("backup", str(settings.keys_dir / "inside"), expect=1)
    assert "inside the key ring" in refused.stderr

    # Restoring: the wrong passphrase writes nothing; the right one the same files, 0600.
    fresh = tmp_path / "fresh-keys"
    wrong = cli(
        "restore",
        "--keys",
        str(dest),
        "--passphrase-stdin",
        input="not the passphrase at all\n",
        expect=1,
        CASEMGR_KEYS_DIR=str(fresh),
    )
    assert "wrong passphrase" in wrong.stderr
    assert not fresh.exists() or not list(fresh.iterdir())
    secret_file = tmp_path / "passphrase"
    secret_file.write_text(PASSPHRASE + "\n")
    restored = Cli.json(
        cli(
            "restore",
            "--keys",
            str(dest),
            "--passphrase-file",
            str(secret_file),
            CASEMGR_KEYS_DIR=str(fresh),
        )
    )
    assert sorted(restored["keys_restored"]) == sorted(
        p.name for p in settings.keys_dir.iterdir() if not p.name.startswith(".")
    )
    for path in fresh.iterdir():
        assert path.read_bytes() == (settings.keys_dir / path.name).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    # Into a directory that holds a key ring: refused, nothing overwritten.
    again = cli(
        "restore",
        "--keys",
        str(dest),
        "--passphrase-file",
        str(secret_file),
        expect=1,
        CASEMGR_KEYS_DIR=str(fresh),
    )
    assert "already holds a key ring" in again.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_init_replays_the_shred_log_on_a_database_restored_by_hand(
    settings, cli, db, world, tmp_path
):
    erased = world.students["a1_first"]
    cli("backup", str(tmp_path / "backup"))
    erase(settings, db, world["leader_a"], erased)
    assert wrapped_key(settings.database_url, erased)[2] is None
    # Someone copies the old database file back by hand, bypassing `casemgr restore`.
    live = Path(settings.database_url.split("///", 1)[1])
    for suffix in ("-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "backup" / "database.sqlite3", live)
    assert wrapped_key(settings.database_url, erased)[2] is not None
    init = cli("init")
    assert "destroyed 1 data keys again" in init.stderr
    assert wrapped_key(settings.database_url, erased)[2] is None


def test_the_shred_log_keeps_a_torn_last_line_out(tmp_path):
    log = ShredLog(tmp_path / "shred-log.jsonl")
    first, second = uuid.uuid4(), uuid.uuid4()
    log.append([first])
    log.append([second])
    with log.path.open("ab") as handle:
        handle.write(b'{"key_id": "12')  # a crash in the middle of an append
    assert log.read() == {first, second}
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    with log.path.open("ab") as handle:
        handle.write(b"\nnot json\n")
    from casemgr.backup import BackupError

    with pytest.raises(BackupError, match="line 3"):
        log.read()
