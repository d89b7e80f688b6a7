"""Shared tools for the audit tests: writing events, reading them back raw, and acting as
an intruder who can reach the database (but not the key ring or the checkpoint file)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from click.testing import CliRunner
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.audit.chain import event_hash
from casemgr.audit.models import AuditEvent, AuditHead
from casemgr.db import transaction
from casemgr.settings import Settings

EVENTS = AuditEvent.__table__
HEAD = AuditHead.__table__
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

    async def body(sessions: async_sessionmaker[AsyncSession]) -> int:
        written = await audit.write_checkpoint(
            sessions, db.keyring.audit_signing_key, settings.checkpoint_file
        )
        assert written is not None
        return written.seq

    return db.run(body)


def events(db: Any) -> list[dict[str, Any]]:
    """Every stored event, oldest first, as typed Python values."""

    async def body(session: AsyncSession) -> list[dict[str, Any]]:
        rows = await session.execute(select(EVENTS).order_by(EVENTS.c.seq))
        return [dict(row._mapping) for row in rows]

    return db.in_transaction(body)


def verify(db: Any, settings: Settings) -> audit.VerifyResult:
    async def body(session: AsyncSession) -> audit.VerifyResult:
        return await audit.verify_chain(
            session, db.keyring.audit_public_key, settings.checkpoint_file
        )

    return db.in_transaction(body)


def cli_verify(settings: Settings) -> tuple[int, dict[str, Any]]:
    """Run ``casemgr audit verify``; return its exit code and its last stdout line, parsed."""
    from casemgr.cli import main

    result = CliRunner().invoke(
        main,
        ["audit", "verify"],
        env={
            "CASEMGR_DATABASE_URL": settings.database_url,
            "CASEMGR_KEYS_DIR": str(settings.keys_dir),
            "CASEMGR_VAR_DIR": str(settings.var_dir),
            "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
        },
        catch_exceptions=False,
    )
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


def rehash(prev_hash: bytes, row: dict[str, Any]) -> bytes:
    """The hash an intruder who knows the algorithm computes for a row."""
    return event_hash(prev_hash, *(row[name] for name in HASHED))


def plaintexts(payload: dict[str, Any]) -> list[str]:
    """Every personal value in a tests.factories.student_payload."""
    values = [payload["full_name"], payload["student_no"], payload["national_id"]]
    values.append(payload["address"])
    for guardian in payload["guardians"]:
        values += [guardian["name"], guardian["phone"]]
    return values
