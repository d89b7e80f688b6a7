"""Backups of the database and of the key ring, and restoring them (``casemgr backup`` /
``casemgr restore``); the shred log that keeps erased students erased in old backups.

**A database backup** is a directory (0700, files 0600)::

    manifest.json       what the backup holds (below), and manifest.sig, its signature
    database.sqlite3    SQLite: a copy made with SQLite's online backup API, or
    database.pgdump     PostgreSQL: pg_dump's custom format
    audit-checkpoints.jsonl   the checkpoint file as it was at the snapshot
    shred-log.jsonl     the shred log as it was (a copy; see below)

The snapshot is consistent while the service serves: SQLite's backup API copies one
read transaction's view (WAL mode: writers go on meanwhile); on PostgreSQL a REPEATABLE
READ transaction exports its snapshot and ``pg_dump --snapshot`` dumps exactly that, while
the manifest's facts are read in the same snapshot. The checkpoint file is copied, and the
snapshot taken, under the checkpoint file's lock, so that no checkpoint is half written
between the two: the copy and the database agree, and the restored trail verifies.

The manifest names the format, the time, the casemgr version, the backend, the schema
revision (Alembic), the audit chain's head (seq and hash) and checkpoints, each file's
SHA-256, and a key canary: a few wrapped data keys per key-encryption-key version in use,
and for each blind-index key version a MAC of a constant. It is signed with the audit-signing
key (domain-separated from checkpoints). ``restore`` checks all of it *before* it restores
anything: the files' hashes, that the key ring's KEKs unwrap the canary keys (a wrong or
rotated-away key ring fails here, with nothing restored and nothing decrypted beyond those
keys in memory), that the blind-index keys are the same, the signature against the pinned
audit public keys, and that the schema revision is one this casemgr knows.

**The key ring** is backed up on its own (``casemgr backup --keys FILE``): one file, the
key files in a tar archive encrypted with AES-256-GCM under a key derived from a passphrase
(scrypt); a clear header says when, which KEK versions, and the KDF's parameters. Database
backups and key-ring backups must never be stored together (either alone is useless; both
together are everything): the commands refuse a destination next to the other kind.

**Erasure and backups (SPEC P5).** Erasing a student destroys the student's data key in the
database, but a backup taken before holds the key, wrapped. Two things keep it erased:

1. *The shred log* (``CASEMGR_SHRED_LOG_FILE``, beside the checkpoint file): the id of every
   destroyed data key, appended (and fsynced) by ``Crypto.shred`` before the erasure commits,
   so a crash can only leave an id of an erasure that was asked for. ``restore`` destroys
   every logged key again in the restored database, with the rest of what erasure does
   (``casemgr.care.records.erase_record``), before the database is put in place; it refuses
   to restore without a shred log unless told ``--no-shred-log`` (recorded in the trail).
   ``casemgr init`` replays it too (a database restored by hand) and adds the database's own
   destroyed keys to it. It holds random key ids only: nothing links them to a child
   without the database.
2. *Key generations*: ``casemgr keys rotate`` then ``casemgr keys retire`` destroys the old
   KEK; every backup taken before the rotation then opens for nobody (its data keys are
   wrapped by the retired KEK; ``restore`` fails at the canary). Key-ring backups made
   before the rotation hold the old KEK and must be destroyed with it. Rotating every
   quarter bounds how long any erased student survives in any backup, even one restored
   by someone who ignores the shred log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import tarfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit, clock
from casemgr.audit.anchors import anchor_lock
from casemgr.audit.chain import key_id as audit_key_id
from casemgr.audit.models import AuditCheckpoint, AuditHead
from casemgr.crypto import Crypto, KeyRing, KeyRingError
from casemgr.crypto.envelope import DecryptionError, blind_index, unwrap_with
from casemgr.crypto.keyring import AUDIT_SIGNING_FILE, KEK_PATTERN, write_secret_file
from casemgr.crypto.models import DataKey
from casemgr.db import create_engine, create_sessionmaker, transaction
from casemgr.settings import Settings

FORMAT = "casemgr-backup/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SQLITE_FILE = "database.sqlite3"
PG_FILE = "database.pgdump"
CHECKPOINTS = "audit-checkpoints.jsonl"
SHRED_COPY = "shred-log.jsonl"
KEYS_FORMAT = "casemgr-keys/1"
KEYS_MAGIC = b"CASEMGR-KEYS/1\n"
SIGNING_CONTEXT = b"casemgr backup manifest v1\n"
BLIND_INDEX_CANARY = ("backup-canary", "casemgr")
CANARY_PER_VERSION = 3
MIN_PASSPHRASE_CHARS = 16
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
HEAD_ID = 1

_data_keys = cast(Table, DataKey.__table__)
_head = cast(Table, AuditHead.__table__)
_checkpoints = cast(Table, AuditCheckpoint.__table__)


class BackupError(Exception):
    """A backup or restore refused or failed; the message says why and what to do."""


# -- the shred log -------------------------------------------------------------------------


class ShredLog:
    """Append-only JSON lines ``{"key_id": ..., "at": ...}``: data keys destroyed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, key_ids: Iterable[uuid.UUID]) -> None:
        """Append and fsync (one write per call: lines of concurrent writers never mix)."""
        at = clock.now().isoformat()
        data = "".join(
            json.dumps({"key_id": str(key_id), "at": at}) + "\n" for key_id in key_ids
        ).encode()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if data:  # an empty append only creates the log: erasures are tracked from now
                os.write(fd, data)
                os.fsync(fd)
        finally:
            os.close(fd)

    def append_one(self, key_id: uuid.UUID) -> None:
        self.append([key_id])

    def read(self) -> set[uuid.UUID]:
        """The logged ids; a line cut short by a crash is skipped, anything else refused."""
        try:
            lines = self.path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return set()
        found = set()
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                found.add(uuid.UUID(json.loads(raw)["key_id"]))
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines) and not raw.endswith(b"\n"):
                    break  # an append cut short
                raise BackupError(f"{self.path} line {number} is not a shred-log entry") from exc
        return found

    @property
    def exists(self) -> bool:
        return self.path.exists()


async def destroyed_keys(session: AsyncSession) -> set[uuid.UUID]:
    rows = await session.execute(select(_data_keys.c.id).where(_data_keys.c.wrapped.is_(None)))
    return {row.id for row in rows}


async def sync_shred_log(sessions: async_sessionmaker[AsyncSession], log: ShredLog) -> int:
    """Add the database's destroyed keys that the log lacks (erasures from before it)."""
    async with sessions() as session:
        missing = await destroyed_keys(session) - log.read()
    log.append(sorted(missing, key=str))
    return len(missing)


async def replay_shreds(
    sessions: async_sessionmaker[AsyncSession], crypto: Crypto, key_ids: set[uuid.UUID]
) -> int:
    """Destroy again every key in ``key_ids`` that still wraps: a restored database.

    A student's key is erased as erasure erases it (``erase_record``: lookup indexes
    scrambled, pairings and tasks ended, emergency reasons withheld); any other key is shredded.
    The replay is audited (a count, no ids). Returns how many keys were destroyed.
    """
    if not key_ids:
        return 0
    from casemgr.care.records import erase_record
    from casemgr.care.services import lock_student
    from casemgr.students.models import Student

    async with transaction(sessions) as session:
        live: set[uuid.UUID] = set()
        ids = sorted(key_ids, key=str)
        for start in range(0, len(ids), 500):
            rows = await session.execute(
                select(_data_keys.c.id).where(
                    _data_keys.c.id.in_(ids[start : start + 500]),
                    _data_keys.c.wrapped.is_not(None),
                )
            )
            live.update(row.id for row in rows)
        if not live:
            return 0
        students = list(await session.scalars(select(Student).where(Student.data_key_id.in_(live))))
        for student in students:
            await lock_student(session, student.id)
            await erase_record(session, crypto, student)
        for key_id in live - {s.data_key_id for s in students}:
            await crypto.shred(session, key_id)
        await audit.record(
            session,
            audit.Action.KEYS_SHRED_REPLAY,
            actor=None,
            resource_type="key_ring",
            detail={"destroyed": len(live), "students": len(students)},
        )
    return len(live)


# -- files ---------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _make_parent(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def _file_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        path.name: {"sha256": _sha256(path), "bytes": path.stat().st_size}
        for path in sorted(folder.iterdir())
    }


def _discard(database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def _put_in_place(work: Path, target: Path, stamp: str) -> Path | None:
    """Move ``target`` (and its WAL files) aside, then ``work`` to ``target``."""
    previous = None
    if target.exists():
        previous = target.with_name(f"{target.name}.before-restore-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{target}{suffix}")
            if old.exists():
                os.replace(old, Path(f"{previous}{suffix}"))
    os.replace(work, target)
    _fsync_dir(target.parent)
    return previous


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def is_key_backup(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(KEYS_MAGIC)) == KEYS_MAGIC
    except OSError:
        return False


def is_database_backup(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_bytes()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _neighbours(folder: Path, limit: int = 1000) -> list[Path]:
    try:
        return sorted(folder.iterdir())[:limit]
    except OSError:
        return []


def check_database_destination(dest: Path, keys_dir: Path) -> None:
    if _inside(dest, keys_dir):
        raise BackupError(f"{dest} is inside the key ring: keep database backups elsewhere")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty directory")
    for neighbour in _neighbours(dest.absolute().parent):
        if neighbour.is_file() and is_key_backup(neighbour):
            raise BackupError(
                f"{neighbour} is a key-ring backup: database backups and key-ring backups"
                " must never be stored together"
            )


def check_keys_destination(dest: Path, keys_dir: Path) -> None:
    if _inside(dest, keys_dir):
        raise BackupError(f"{dest} is inside the key ring: write the copy elsewhere")
    if dest.exists():
        raise BackupError(f"{dest} exists; a key-ring backup never overwrites a file")
    parent = dest.absolute().parent
    if is_database_backup(parent) or any(
        neighbour.is_dir() and is_database_backup(neighbour) for neighbour in _neighbours(parent)
    ):
        raise BackupError(
            f"{parent} holds a database backup: database backups and key-ring backups must"
            " never be stored together"
        )


# -- what a backup holds -------------------------------------------------------------------


def _facts(connection: Connection) -> dict[str, Any]:
    """The manifest's facts, read in the snapshot being backed up."""
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    head = connection.execute(
        select(_head.c.last_seq, _head.c.last_hash).where(_head.c.id == HEAD_ID)
    ).one()
    count, last = connection.execute(select(func.count(), func.max(_checkpoints.c.seq))).one()
    versions = sorted(
        {
            int(v)
            for (v,) in connection.execute(
                select(_data_keys.c.kek_version).where(_data_keys.c.wrapped.is_not(None)).distinct()
            )
        }
    )
    canary = []
    for version in versions:
        rows = connection.execute(
            select(_data_keys.c.id, _data_keys.c.wrapped)
            .where(_data_keys.c.wrapped.is_not(None), _data_keys.c.kek_version == version)
            .order_by(_data_keys.c.id)
            .limit(CANARY_PER_VERSION)
        )
        canary += [
            {
                "key_id": str(row.id),
                "kek_version": version,
                "wrapped": base64.b64encode(bytes(row.wrapped)).decode(),
            }
            for row in rows
        ]
    destroyed = [
        str(key_id)
        for (key_id,) in connection.execute(
            select(_data_keys.c.id).where(_data_keys.c.wrapped.is_(None))
        )
    ]
    return {
        "schema_revision": revision,
        "audit": {
            "head_seq": int(head.last_seq),
            "head_hash": bytes(head.last_hash).hex(),
            "checkpoints": int(count),
            "last_checkpoint_seq": None if last is None else int(last),
        },
        "keys": {"kek_versions": versions, "canary": canary},
        "destroyed_keys": sorted(destroyed),
    }


def blind_index_canary(keyring: KeyRing) -> dict[str, str]:
    kind, value = BLIND_INDEX_CANARY
    return {
        str(version): blind_index(key, kind, value).hex()
        for version, key in sorted(keyring.blind_index_keys.items())
    }


def _sign(keyring: KeyRing, manifest: bytes) -> bytes:
    signing_key = keyring.audit_signing_key
    signature = signing_key.sign(SIGNING_CONTEXT + manifest)
    return (
        json.dumps(
            {"key_id": audit_key_id(signing_key.public_key()), "signature": signature.hex()}
        ).encode()
        + b"\n"
    )


def _sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory database has nothing to back up")
    return Path(database)


def _libpq(database_url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL for pg_dump / pg_restore, and the environment (password kept off argv)."""
    url = make_url(database_url).set(drivername="postgresql")
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
        url = url.set(password=None)
    query = {}
    ssl = url.query.get("ssl") or url.query.get("sslmode")
    if ssl:
        query["sslmode"] = ssl if isinstance(ssl, str) else ssl[0]
    return url.set(query=query).render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} is not installed: install the PostgreSQL client of the server's version"
            " (Debian: postgresql-client)"
        )
    return found


async def _run(args: list[str], env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        said = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BackupError(f"{Path(args[0]).name} failed: {' / '.join(said)}")


def _copy_private(source: Path, target: Path) -> None:
    write_secret_file(target, source.read_bytes())


# -- backup --------------------------------------------------------------------------------


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]


async def backup_database(settings: Settings, keyring: KeyRing, dest: Path) -> BackupResult:
    """Write a consistent backup of the database to the new directory ``dest``."""
    check_database_destination(dest, settings.keys_dir)
    _private_dir(dest)
    created_at = clock.now()
    if settings.is_sqlite:
        database_file = dest / SQLITE_FILE
        if not _sqlite_path(settings.database_url).is_file():
            raise BackupError(f"no database at {_sqlite_path(settings.database_url)}")
        async with anchor_lock(settings.checkpoint_file):
            _copy_checkpoints(settings, dest)
            await asyncio.to_thread(
                _sqlite_snapshot, _sqlite_path(settings.database_url), database_file
            )
        engine = create_sync_engine(f"sqlite:///file:{database_file}?mode=ro&uri=true")
        try:
            with engine.connect() as connection:
                facts = _facts(connection)
        finally:
            engine.dispose()
    else:
        database_file = dest / PG_FILE
        facts = await _pg_snapshot(settings, database_file)
    if settings.shred_log_file is not None:
        log = ShredLog(settings.shred_log_file)
        log.append(sorted({uuid.UUID(k) for k in facts["destroyed_keys"]} - log.read(), key=str))
        if log.exists:
            _copy_private(settings.shred_log_file, dest / SHRED_COPY)
    files = _file_hashes(dest)
    manifest = {
        "format": FORMAT,
        "created_at": created_at.isoformat(),
        "casemgr_version": _version(),
        "backend": "sqlite" if settings.is_sqlite else "postgresql",
        "database_file": database_file.name,
        **facts,
        "destroyed_keys": len(facts["destroyed_keys"]),
        "blind_index_canary": blind_index_canary(keyring),
        "files": files,
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    write_secret_file(dest / MANIFEST, data)
    write_secret_file(dest / SIGNATURE, _sign(keyring, data))
    _fsync_dir(dest)
    return BackupResult(dest, manifest)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("casemgr")
    except PackageNotFoundError:
        return "unknown"


def _copy_checkpoints(settings: Settings, dest: Path) -> None:
    if settings.checkpoint_file.exists():
        _copy_private(settings.checkpoint_file, dest / CHECKPOINTS)


def _sqlite_snapshot(source: Path, target: Path) -> None:
    """One read transaction's view of ``source``, copied page by page (WAL: writers go on)."""
    write_secret_file(target, b"")
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: all pages in one step, one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)


async def _pg_snapshot(settings: Settings, target: Path) -> dict[str, Any]:
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            snapshot_conn = await connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with snapshot_conn.begin():
                async with anchor_lock(settings.checkpoint_file):
                    _copy_checkpoints(settings, target.parent)
                    snapshot = (
                        await snapshot_conn.execute(text("SELECT pg_export_snapshot()"))
                    ).scalar_one()
                    facts = await snapshot_conn.run_sync(_facts)
                url, env = _libpq(settings.database_url)
                await _run(
                    [
                        _tool("pg_dump"),
                        "--format=custom",
                        "--no-password",
                        f"--snapshot={snapshot}",
                        f"--file={target}",
                        f"--dbname={url}",
                    ],
                    env,
                )
    finally:
        await engine.dispose()
    os.chmod(target, 0o600)
    return facts


# -- restore -------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    manifest: dict[str, Any]
    replayed: int
    checkpoint_file_moved_to: Path | None
    previous_database_moved_to: Path | None
    verify: audit.VerifyResult
    notes: list[str] = field(default_factory=list)


def read_backup(src: Path, keyring: KeyRing) -> dict[str, Any]:
    """The manifest of the backup in ``src``, once every check before restoring has passed.

    Nothing is restored, and nothing decrypted but the canary keys (in memory), when any
    check fails.
    """
    try:
        data = (src / MANIFEST).read_bytes()
        manifest = json.loads(data)
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} holds no readable backup manifest ({MANIFEST})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src} is not a casemgr backup of format {FORMAT}")
    for name, expected in manifest["files"].items():
        path = src / name
        if not path.is_file() or _sha256(path) != expected["sha256"]:
            raise BackupError(f"{name} in {src} is missing or damaged (its SHA-256 differs)")
    check_key_canary(manifest, keyring)
    check_signature(src, data, keyring)
    return manifest


def check_key_canary(manifest: dict[str, Any], keyring: KeyRing) -> None:
    """The key ring must unwrap the backup's data keys and index as the backup did."""
    for entry in manifest["keys"]["canary"]:
        version = int(entry["kek_version"])
        try:
            aead = AESGCM(keyring.kek(version))
            unwrap_with(aead, uuid.UUID(entry["key_id"]), base64.b64decode(entry["wrapped"]))
        except KeyRingError:
            raise BackupError(
                f"the key ring in {keyring.keys_dir} has no key-encryption key version"
                f" {version}, which wraps this backup's data keys: restore the key ring it"
                " was made with (casemgr restore --keys), or the backup is older than a"
                " retired key and can no longer be opened. Nothing was restored."
            ) from None
        except DecryptionError:
            raise BackupError(
                f"the key ring in {keyring.keys_dir} does not open this backup's data keys"
                f" (key-encryption key version {version} differs): it is another"
                " deployment's key ring. Nothing was restored."
            ) from None
    ours = blind_index_canary(keyring)
    for version, mac in manifest["blind_index_canary"].items():
        if ours.get(version) != mac:
            raise BackupError(
                f"the key ring's blind-index key version {version} is missing or differs"
                " from the backup's: lookups by student number would find nothing. Restore"
                " the key ring the backup was made with. Nothing was restored."
            )


def check_signature(src: Path, manifest: bytes, keyring: KeyRing) -> None:
    try:
        signed = json.loads((src / SIGNATURE).read_bytes())
        signature = bytes.fromhex(signed["signature"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{src} has no readable manifest signature ({SIGNATURE})") from exc
    for public in keyring.audit_public_keys:
        try:
            public.verify(signature, SIGNING_CONTEXT + manifest)
            return
        except InvalidSignature:
            continue
    raise BackupError(
        "the backup's manifest is not signed by any audit key this key ring trusts: it was"
        " altered, or made by another deployment. Nothing was restored."
    )


def _known_revision(revision: str) -> None:
    from alembic.script import ScriptDirectory

    from casemgr.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    try:
        found = script.get_revision(revision)
    except Exception as exc:  # alembic raises several kinds for an unknown id
        raise BackupError(
            f"the backup's schema revision {revision} is unknown to this casemgr (made by a"
            " newer version?): restore it with that version"
        ) from exc
    if found is None:
        raise BackupError(f"the backup's schema revision {revision} is unknown")


def tombstones(
    settings: Settings, src: Path, extra_logs: list[Path], *, without_log: bool
) -> set[uuid.UUID]:
    """Every destroyed key id the restore must destroy again."""
    logs = [ShredLog(path) for path in extra_logs]
    for log in logs:
        if not log.exists:
            raise BackupError(f"no shred log at {log.path}")
    live = ShredLog(settings.shred_log_file) if settings.shred_log_file else None
    if live is not None and live.exists:
        logs.append(live)
    elif not extra_logs and not without_log:
        where = settings.shred_log_file or "CASEMGR_SHRED_LOG_FILE"
        raise BackupError(
            f"no shred log at {where}: without it, students erased after this backup was"
            " taken would come back. Copy it from where it is kept off the host (or from a"
            " newer backup's shred-log.jsonl) and name it with --shred-log, or pass"
            " --no-shred-log to restore anyway (the trail records that)."
        )
    copy = ShredLog(src / SHRED_COPY)
    if copy.exists:
        logs.append(copy)
    found: set[uuid.UUID] = set()
    for log in logs:
        found |= log.read()
    return found


async def _empty_pg(database_url: str) -> bool:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')"
                )
            )
    finally:
        await engine.dispose()
    return not count


async def restore_database(
    settings: Settings,
    keyring: KeyRing,
    src: Path,
    *,
    shred_logs: list[Path] | None = None,
    without_shred_log: bool = False,
    replace: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RestoreResult:
    """Restore the backup in ``src`` into the configured database (see the module doc)."""
    say = progress or (lambda _message: None)
    manifest = read_backup(src, keyring)
    backend = "sqlite" if settings.is_sqlite else "postgresql"
    if manifest["backend"] != backend:
        raise BackupError(
            f"this is a {manifest['backend']} backup; CASEMGR_DATABASE_URL names {backend}"
        )
    _known_revision(manifest["schema_revision"])
    erased = tombstones(settings, src, shred_logs or [], without_log=without_shred_log)
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    previous: Path | None = None
    if settings.is_sqlite:
        target = _sqlite_path(settings.database_url)
        if target.exists() and not replace:
            raise BackupError(
                f"{target} exists: restore into a new path, or pass --replace to move it"
                " aside (it is kept, never deleted)"
            )
        _make_parent(target)
        work = target.with_name(f"{target.name}.restoring-{stamp}")
        await asyncio.to_thread(_sqlite_snapshot, src / manifest["database_file"], work)
        work_url = f"sqlite+aiosqlite:///{work}"
    else:
        if not await _empty_pg(settings.database_url):
            raise BackupError(
                "the database CASEMGR_DATABASE_URL names is not empty: create a new, empty"
                " database (createdb) and restore into it; the old one is left as it is"
            )
        say("pg_restore")
        url, env = _libpq(settings.database_url)
        await _run(
            [
                _tool("pg_restore"),
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--no-password",
                f"--dbname={url}",
                str(src / manifest["database_file"]),
            ],
            env,
        )
        work_url = settings.database_url
    try:
        replayed = await _after_restore(work_url, keyring, manifest, erased, say)
    except BaseException:
        if settings.is_sqlite:
            _discard(work)
        else:
            say(
                "the restored database must not be used: drop it and restore again"
                " (erased students' keys may not all be destroyed in it)"
            )
        raise
    if settings.is_sqlite:
        previous = _put_in_place(work, target, stamp)
    moved = _install_checkpoints(settings, src, stamp)
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    try:
        async with transaction(sessions) as session:
            await audit.record(
                session,
                audit.Action.BACKUP_RESTORE,
                actor=None,
                resource_type="backup",
                detail={
                    "backup_head_seq": manifest["audit"]["head_seq"],
                    "shreds_replayed": replayed,
                    "without_shred_log": without_shred_log,
                },
            )
        notes = []
        try:
            await audit.seal(sessions, keyring, settings)
        except audit.CheckpointRefused as exc:
            notes.append(f"the restored trail was not sealed: {exc}")
        async with sessions() as session:
            verified = await audit.verify_chain(
                session,
                keyring.audit_public_keys,
                settings.checkpoint_file,
                seal_deadline=settings.seal_deadline,
            )
    finally:
        await engine.dispose()
    if settings.shred_log_file is not None and erased:
        live = ShredLog(settings.shred_log_file)
        live.append(sorted(erased - live.read(), key=str))
    return RestoreResult(manifest, replayed, moved, previous, verified, notes)


async def _after_restore(
    database_url: str,
    keyring: KeyRing,
    manifest: dict[str, Any],
    erased: set[uuid.UUID],
    say: Callable[[str], None],
) -> int:
    """Check the restored chain's head, migrate, destroy the erased students' keys again."""
    from casemgr.migrate import upgrade

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            head = (
                await connection.execute(
                    select(_head.c.last_seq, _head.c.last_hash).where(_head.c.id == HEAD_ID)
                )
            ).one()
        expected = manifest["audit"]
        if (
            int(head.last_seq) != expected["head_seq"]
            or bytes(head.last_hash).hex() != expected["head_hash"]
        ):
            raise BackupError("the restored audit chain's head differs from the manifest's")
    finally:
        await engine.dispose()
    say("migrating")
    await upgrade(database_url)
    engine = create_engine(database_url)
    try:
        say("destroying the keys of erased students again")
        return await replay_shreds(create_sessionmaker(engine), Crypto(keyring), erased)
    finally:
        await engine.dispose()


def _install_checkpoints(settings: Settings, src: Path, stamp: str) -> Path | None:
    """Put the backup's checkpoint file in place; keep the current one beside it.

    The checkpoints written after the backup describe events the restore rolled back: they
    stay in the moved file (and at the external anchor) for the auditors.
    """
    current = settings.checkpoint_file
    moved = None
    if current.exists():
        moved = current.with_name(f"{current.name}.before-restore-{stamp}")
        os.replace(current, moved)
    copy = src / CHECKPOINTS
    if copy.exists():
        current.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _copy_private(copy, current)
    return moved


# -- the key ring --------------------------------------------------------------------------


def _key_files(keys_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in keys_dir.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and path.name not in ("README.md", ".gitignore")
    )


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def check_passphrase(passphrase: bytes) -> None:
    if len(passphrase.decode("utf-8", errors="replace")) < MIN_PASSPHRASE_CHARS:
        raise BackupError(
            f"the passphrase must have {MIN_PASSPHRASE_CHARS} characters at least"
            " (several words are easy to keep and hard to guess)"
        )


def backup_keys(keys_dir: Path, dest: Path, passphrase: bytes) -> dict[str, Any]:
    """Write the key ring, encrypted under ``passphrase``, to the new file ``dest``."""
    check_passphrase(passphrase)
    keyring = KeyRing(keys_dir)  # refuses an unsafe or incomplete ring
    check_keys_destination(dest, keys_dir)
    archive = io.BytesIO()
    files = _key_files(keys_dir)
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = {
        "format": KEYS_FORMAT,
        "created_at": clock.now().isoformat(),
        "kek_versions": keyring.kek_versions,
        "files": [path.name for path in files],
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
    }
    header_line = json.dumps(header, sort_keys=True).encode() + b"\n"
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    sealed = AESGCM(key).encrypt(nonce, archive.getvalue(), KEYS_MAGIC + header_line)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_secret_file(dest, KEYS_MAGIC + header_line + sealed)
    return header


def read_key_backup(src: Path) -> tuple[dict[str, Any], bytes, bytes]:
    data = src.read_bytes()
    if not data.startswith(KEYS_MAGIC):
        raise BackupError(f"{src} is not a casemgr key-ring backup")
    header_line, _, sealed = data[len(KEYS_MAGIC) :].partition(b"\n")
    try:
        header = json.loads(header_line)
    except ValueError as exc:
        raise BackupError(f"{src} has a damaged header") from exc
    if header.get("format") != KEYS_FORMAT:
        raise BackupError(f"{src} is not of format {KEYS_FORMAT}")
    return header, header_line + b"\n", sealed


def restore_keys(src: Path, keys_dir: Path, passphrase: bytes) -> list[str]:
    """Write the key ring in the backup ``src`` into ``keys_dir``, which holds none yet."""
    header, header_line, sealed = read_key_backup(src)
    if keys_dir.exists() and (
        any(KEK_PATTERN.match(p.name) for p in keys_dir.iterdir())
        or (keys_dir / AUDIT_SIGNING_FILE).exists()
    ):
        raise BackupError(
            f"{keys_dir} already holds a key ring; restore into an empty directory"
            " (CASEMGR_KEYS_DIR) so that no key is ever overwritten"
        )
    kdf = header["kdf"]
    key = _derive(
        passphrase, base64.b64decode(header["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    )
    try:
        archive = AESGCM(key).decrypt(
            base64.b64decode(header["nonce"]), sealed, KEYS_MAGIC + header_line
        )
    except InvalidTag:
        raise BackupError("wrong passphrase, or the key-ring backup is damaged") from None
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    written = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        for member in tar.getmembers():
            name = member.name
            if not member.isfile() or "/" in name or name.startswith("."):
                raise BackupError(f"the key-ring backup holds an unexpected entry {name!r}")
            extracted = tar.extractfile(member)
            assert extracted is not None
            write_secret_file(keys_dir / name, extracted.read())
            written.append(name)
    _fsync_dir(keys_dir)
    KeyRing(keys_dir)  # a complete, safely stored ring, or an error naming what is wrong
    return written
