"""Shared tools for the audit tests: writing events, reading them back raw, sealing and
verifying, and acting as an intruder who can reach the database (and, where a test says
so, the checkpoint file or the key ring)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from click.testing import CliRunner, Result
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.audit.anchors import read_anchor_file
from casemgr.audit.chain import Checkpoint, event_hash
from casemgr.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from casemgr.crypto.keyring import KeyRing, read_audit_public_keys
from casemgr.db import transaction
from casemgr.settings import Settings

EVENTS = AuditEvent.__table__
HEAD = AuditHead.__table__
CHECKPOINTS = AuditCheckpoint.__table__
# Every column that goes into an event's hash, in event_hash's argument order.
HASHED = (
    "seq",
    "at",
    "actor_id",
    "role",
    "school_id",
    "action",
    "resource_type",
    "resource_id",
    "student_id",
    "outcome",
    "purpose",
    "emergency",
    "detail",
    "client_addr",
)
N = 15  # events in a chain built by build_chain
ACTOR = audit.Actor(
    user_id=uuid.UUID("00000000-0000-4000-8000-00000000a001"),
    role="class_teacher",
    school_id=uuid.UUID("00000000-0000-4000-8000-00000000cafe"),
)


def append_events(db: Any, count: int) -> list[int]:
    """Append ``count`` plausible events, one transaction each; return their seqs."""

    async def body(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
        seqs = []
        for i in range(count):
            async with transaction(sessions) as session:
                student = uuid.uuid5(uuid.NAMESPACE_OID, f"student-{i % 4}")
                seqs.append(
                    await audit.record(
                        session,
                        audit.Action.STUDENT_READ if i % 3 else audit.Action.ROSTER_READ,
                        actor=ACTOR,
                        resource_type="student",
                        resource_id=student,
                        student_id=student,
                        outcome=audit.DENY if i % 5 == 4 else audit.ALLOW,
                        detail={"n": i},
                    )
                )
        return seqs

    return db.run(body)


def checkpoint(db: Any, settings: Settings) -> int:
    """Seal the chain's current tip (as the service does periodically); return its seq."""
    written = seal(db, settings)
    assert written is not None
    return written.seq


def seal(db: Any, settings: Settings, keyring: KeyRing | None = None) -> Checkpoint | None:
    """``audit.seal`` with the test's key ring (or another one); None if nothing was new."""

    async def body(sessions: async_sessionmaker[AsyncSession]) -> Checkpoint | None:
        return await audit.seal(sessions, keyring or db.keyring, settings)

    return db.run(body)


def events(db: Any) -> list[dict[str, Any]]:
    """Every stored event, oldest first, as typed Python values."""

    async def body(session: AsyncSession) -> list[dict[str, Any]]:
        rows = await session.execute(select(EVENTS).order_by(EVENTS.c.seq))
        return [dict(row._mapping) for row in rows]

    return db.in_transaction(body)


def verify(
    db: Any,
    settings: Settings,
    *,
    public_key_file: Path | None = None,
    checkpoint_file: Path | None = None,
) -> audit.VerifyResult:
    """``verify_chain`` trusting the pinned public keys (``audit-signing.pub`` by default)."""
    trusted = read_audit_public_keys(public_key_file or settings.keys_dir / "audit-signing.pub")

    async def body(session: AsyncSession) -> audit.VerifyResult:
        return await audit.verify_chain(
            session,
            trusted,
            checkpoint_file or settings.checkpoint_file,
            seal_deadline=settings.seal_deadline,
        )

    return db.in_transaction(body)


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(settings.var_dir),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
        "CASEMGR_AUDIT_CHECKPOINT_SECONDS": str(settings.checkpoint_interval_seconds),
        "CASEMGR_AUDIT_ANCHOR_URL": settings.audit_anchor_url or "",
    }


def cli(settings: Settings, *args: str) -> Result:
    """Run ``casemgr ARGS`` against the test's database, keys and checkpoint file."""
    from casemgr.cli import main

    return CliRunner().invoke(main, list(args), env=cli_env(settings), catch_exceptions=False)


def cli_verify(settings: Settings, *options: str) -> tuple[int, dict[str, Any]]:
    """Run ``casemgr audit verify``; return its exit code and its last stdout line, parsed."""
    result = cli(settings, "audit", "verify", *options)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {result.stderr}"
    return result.exit_code, msgspec.json.decode(lines[-1])


async def _disarm(session: AsyncSession) -> None:
    """What an intruder with database rights does first: switch the append-only triggers off."""
    assert session.bind is not None
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        return
    for table in ("audit_events", "audit_checkpoints"):
        for verb in ("update", "delete"):
            await session.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))


def intrude(db: Any, body: Callable[[AsyncSession], Awaitable[None]]) -> None:
    """Run ``body`` in one transaction with the append-only protection disarmed."""

    async def wrapped(session: AsyncSession) -> None:
        await _disarm(session)
        await body(session)

    db.in_transaction(wrapped)


async def set_event(session: AsyncSession, seq: int, /, **values: Any) -> None:
    await session.execute(update(EVENTS).where(EVENTS.c.seq == seq).values(**values))


async def set_head(session: AsyncSession, seq: int, chain_hash: bytes) -> None:
    await session.execute(update(HEAD).values(last_seq=seq, last_hash=chain_hash))


async def delete_checkpoint_rows(session: AsyncSession, *, above: int = 0) -> None:
    await session.execute(delete(CHECKPOINTS).where(CHECKPOINTS.c.seq > above))


async def put_checkpoint_row(session: AsyncSession, cp: Checkpoint) -> None:
    await session.execute(
        insert(CHECKPOINTS).values(
            seq=cp.seq, hash=cp.hash, at=cp.at, key_id=cp.key_id, signature=cp.signature
        )
    )


def checkpoint_rows(db: Any) -> list[int]:
    return [row[0] for row in db.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")]


def file_checkpoints(settings: Settings) -> list[int]:
    return [cp.seq for cp in read_anchor_file(settings.checkpoint_file).checkpoints]


def rehash(prev_hash: bytes, row: dict[str, Any]) -> bytes:
    """The hash an intruder who knows the algorithm computes for a row."""
    return event_hash(prev_hash, *(row[name] for name in HASHED))


def build_chain(db: Any, settings: Settings, checkpoints_at: tuple[int, ...] = (N,)) -> None:
    """Events 1..N, sealed by checkpoints at the given seqs."""
    written = 0
    for target in checkpoints_at:
        append_events(db, target - written)
        written = target
        assert checkpoint(db, settings) == target
    append_events(db, N - written)
    assert [e["seq"] for e in events(db)] == list(range(1, N + 1))


def rebuild_from(db: Any, seq: int, **change: Any) -> bytes:
    """Change event ``seq``, recompute every hash from there on and move the head, as an
    intruder who knows the algorithm would. Returns the new tip hash."""
    rows = events(db)
    rows[seq - 1].update(change)

    async def tamper(session: AsyncSession) -> None:
        prev = rows[seq - 2]["hash"]
        for row in rows[seq - 1 :]:
            row["prev_hash"], row["hash"] = prev, rehash(prev, row)
            values = change if row["seq"] == seq else {}
            await set_event(session, row["seq"], **values, prev_hash=prev, hash=row["hash"])
            prev = row["hash"]
        await set_head(session, rows[-1]["seq"], prev)

    intrude(db, tamper)
    rebuilt = events(db)
    # The chain alone no longer shows anything: every link is consistent.
    assert rebuilt == rows
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(rebuilt))
    return rows[-1]["hash"]


def assert_detected(db: Any, settings: Settings, first_bad_seq: int) -> None:
    """Both the service and the command line report the damage at ``first_bad_seq``."""
    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, first_bad_seq), result.reason
    code, line = cli_verify(settings)
    assert code == 1
    assert line == {
        "ok": False,
        "checked": result.checked,
        "first_bad_seq": first_bad_seq,
        "reason": result.reason,
    }


def plaintexts(payload: dict[str, Any]) -> list[str]:
    """Every personal value in a tests.factories.student_payload."""
    values = [payload["full_name"], payload["student_no"], payload["national_id"]]
    values.append(payload["address"])
    for guardian in payload["guardians"]:
        values += [guardian["name"], guardian["phone"]]
    return values
