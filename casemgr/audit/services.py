from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.audit.chain import (
    GENESIS_HASH,
    Checkpoint,
    checkpoint_signature_ok,
    event_hash,
    key_id,
    sign_checkpoint,
)
from casemgr.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from casemgr.db import utcnow

ALLOW = "allow"
DENY = "deny"
HEAD_ID = 1


class Action(StrEnum):
    """Audit actions, named ``resource:action`` like the permissions they mirror."""

    LOGIN = "auth:login"
    LOGOUT = "auth:logout"
    SCHOOL_CREATE = "school:create"
    CLASS_CREATE = "class:create"
    USER_CREATE = "user:create"
    ROLE_GRANT = "user:grant_role"
    STUDENT_CREATE = "student:create"
    STUDENT_READ = "student:read"
    STUDENT_UPDATE = "student:update"
    STUDENT_LOOKUP = "student:lookup"
    ROSTER_READ = "roster:read"
    AUDIT_READ = "audit:read"
    AUDIT_VERIFY = "audit:verify"
    AUDIT_CHECKPOINT = "audit:checkpoint"
    KEYS_INIT = "keys:init"
    KEYS_ROTATE = "keys:rotate"
    DEMO_SEED = "demo:seed"


# Why an access happened, as a controlled vocabulary (never free text, which could carry
# content). Callers may name a narrower purpose (emergency access does); otherwise it
# follows from what was touched.
ADMINISTRATION = "administration"
PURPOSES_BY_RESOURCE = {
    "auth": "authentication",
    "audit": "oversight",
    "keys": "key_management",
    "school": ADMINISTRATION,
    "class": ADMINISTRATION,
    "user": ADMINISTRATION,
    "demo": ADMINISTRATION,
}
CARE_PROGRAMME = "care_programme"


def default_purpose(action: str) -> str:
    return PURPOSES_BY_RESOURCE.get(action.split(":", 1)[0], CARE_PROGRAMME)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user in a role (``user_id`` None for the operator's command line)."""

    user_id: uuid.UUID | None
    role: str | None
    school_id: uuid.UUID | None = None
    client: str | None = None


SYSTEM = Actor(user_id=None, role="system")

_events = cast(Table, AuditEvent.__table__)
_head = cast(Table, AuditHead.__table__)
_checkpoints = cast(Table, AuditCheckpoint.__table__)
_encode_detail = msgspec.json.Encoder(order="sorted").encode


async def record(
    session: AsyncSession,
    action: str,
    *,
    actor: Actor | None,
    resource_type: str,
    resource_id: uuid.UUID | str | None = None,
    student_id: uuid.UUID | None = None,
    school_id: uuid.UUID | None = None,
    outcome: str = ALLOW,
    purpose: str | None = None,
    emergency: bool = False,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append one event in the caller's transaction and return its sequence number.

    ``detail`` carries facts such as a status code or a count, never names or content.
    """
    if outcome not in (ALLOW, DENY):
        raise ValueError(f"outcome must be {ALLOW!r} or {DENY!r}")
    actor = actor or SYSTEM
    head = (
        await session.execute(
            select(_head.c.last_seq, _head.c.last_hash)
            .where(_head.c.id == HEAD_ID)
            .with_for_update()
        )
    ).one()
    seq = int(head.last_seq) + 1
    at = utcnow()
    values: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "actor_id": actor.user_id,
        "role": actor.role,
        "school_id": school_id if school_id is not None else actor.school_id,
        "action": str(action),
        "resource_type": resource_type,
        "resource_id": None if resource_id is None else str(resource_id),
        "student_id": student_id,
        "outcome": outcome,
        "purpose": purpose or default_purpose(str(action)),
        "emergency": emergency,
        "detail": None if not detail else _encode_detail(detail).decode(),
        "client_addr": actor.client,
    }
    chained = event_hash(bytes(head.last_hash), **values)
    await session.execute(
        insert(_events).values(**values, prev_hash=bytes(head.last_hash), hash=chained)
    )
    await session.execute(
        update(_head).where(_head.c.id == HEAD_ID).values(last_seq=seq, last_hash=chained)
    )
    return seq


async def record_denial(session: AsyncSession, action: str, **kwargs: Any) -> int:
    """Commit a denial event on its own: the refused request's work is rolled back first."""
    await session.rollback()
    seq = await record(session, action, outcome=DENY, **kwargs)
    await session.commit()
    return seq


async def write_checkpoint(
    sessions: async_sessionmaker[AsyncSession],
    signing_key: Ed25519PrivateKey,
    checkpoint_file: Path,
) -> Checkpoint | None:
    """Sign the chain's current tip, store it in the database and append it to the file.

    Returns None when there is nothing new to seal.
    """
    async with sessions() as session, session.begin():
        head = (
            await session.execute(
                select(_head.c.last_seq, _head.c.last_hash).where(_head.c.id == HEAD_ID)
            )
        ).one()
        if head.last_seq == 0:
            return None
        latest = await session.scalar(select(func.max(AuditCheckpoint.seq)))
        if latest is not None and latest >= head.last_seq:
            return None
        at = utcnow()
        checkpoint = Checkpoint(
            seq=int(head.last_seq),
            hash=bytes(head.last_hash),
            at=at,
            key_id=key_id(signing_key.public_key()),
            signature=sign_checkpoint(signing_key, int(head.last_seq), bytes(head.last_hash), at),
        )
        await session.execute(
            insert(_checkpoints).values(
                seq=checkpoint.seq,
                hash=checkpoint.hash,
                at=checkpoint.at,
                key_id=checkpoint.key_id,
                signature=checkpoint.signature,
            )
        )
    checkpoint_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(checkpoint_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(checkpoint.to_json_line())
        handle.flush()
        os.fsync(handle.fileno())
    return checkpoint


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None = None
    checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "first_bad_seq": self.first_bad_seq}


def read_checkpoint_file(path: Path) -> tuple[list[Checkpoint], str | None]:
    if not path.exists():
        return [], None
    checkpoints = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                checkpoints.append(Checkpoint.from_json_line(line))
            except (ValueError, KeyError, msgspec.DecodeError):
                return checkpoints, f"checkpoint file line {number} is unreadable"
    return checkpoints, None


async def verify_chain(
    session: AsyncSession,
    public_key: Ed25519PublicKey,
    checkpoint_file: Path | None,
    *,
    batch_size: int = 20_000,
) -> VerifyResult:
    """Walk the whole chain and hold it against every signed checkpoint.

    Detects changed, deleted, inserted and reordered events (the chain breaks at the first
    one) and events cut off the end or a chain rebuilt wholesale (a checkpoint no longer
    matches). ``first_bad_seq`` is the first sequence number that cannot be vouched for.
    """
    file_checkpoints, file_problem = (
        read_checkpoint_file(checkpoint_file) if checkpoint_file else ([], None)
    )
    db_rows = await session.execute(
        select(
            AuditCheckpoint.seq,
            AuditCheckpoint.hash,
            AuditCheckpoint.at,
            AuditCheckpoint.key_id,
            AuditCheckpoint.signature,
        )
    )
    checkpoints: dict[tuple[int, bytes], Checkpoint] = {}
    # The file is the copy an intruder in the database cannot reach; database copies add
    # coverage when the file was lost, and are held to the same signature check.
    for cp in [
        *file_checkpoints,
        *(Checkpoint(r.seq, bytes(r.hash), r.at, r.key_id, bytes(r.signature)) for r in db_rows),
    ]:
        checkpoints.setdefault((cp.seq, cp.hash), cp)
    wanted = {seq for seq, _ in checkpoints}

    prev = GENESIS_HASH
    expected = 1
    chain_bad: int | None = None
    reason: str | None = None
    seen: dict[int, bytes] = {}
    c = _events.c
    result = await session.stream(
        select(
            c.seq,
            c.at,
            c.actor_id,
            c.role,
            c.school_id,
            c.action,
            c.resource_type,
            c.resource_id,
            c.student_id,
            c.outcome,
            c.purpose,
            c.emergency,
            c.detail,
            c.client_addr,
            c.prev_hash,
            c.hash,
        )
        .order_by(c.seq)
        .execution_options(yield_per=batch_size)
    )
    async for partition in result.partitions(batch_size):
        for row in partition:
            seq = row[0]
            if seq != expected:
                chain_bad, reason = expected, f"sequence gap: expected {expected}, found {seq}"
                break
            stored_prev = bytes(row[14])
            computed = event_hash(prev, *row[:14])
            if stored_prev != prev or bytes(row[15]) != computed:
                chain_bad, reason = seq, "event does not match the chain"
                break
            if seq in wanted:
                seen[seq] = computed
            prev = computed
            expected += 1
        if chain_bad is not None:
            break
    await result.close()
    last_good = expected - 1
    checked = last_good if chain_bad is None else chain_bad
    if chain_bad is not None:
        return VerifyResult(False, checked, chain_bad, reason, len(checkpoints))

    head_seq = await session.scalar(select(_head.c.last_seq).where(_head.c.id == HEAD_ID))
    candidates: list[tuple[int, str]] = []
    if head_seq is not None and head_seq > last_good:
        candidates.append(
            (last_good + 1, f"events after {last_good} are missing (head at {head_seq})")
        )
    vouched = 0
    for cp in sorted(checkpoints.values(), key=lambda cp: cp.seq):
        if not checkpoint_signature_ok(public_key, cp.seq, cp.hash, cp.at, cp.signature):
            # A forged checkpoint vouches for nothing: what only it covers is suspect, and
            # naming its own seq would wrongly suggest that everything before it is sound.
            candidates.append((vouched + 1, f"checkpoint at {cp.seq} has a bad signature"))
            continue
        if cp.seq > last_good:
            candidates.append(
                (last_good + 1, f"events after {last_good} are missing (checkpoint at {cp.seq})")
            )
        elif seen.get(cp.seq) != cp.hash:
            candidates.append(
                (vouched + 1, f"chain rebuilt: checkpoint at {cp.seq} does not match")
            )
        else:
            vouched = max(vouched, cp.seq)
    if file_problem:
        candidates.append((vouched + 1, file_problem))
    if candidates:
        first, why = min(candidates)
        return VerifyResult(False, last_good, first, why, len(checkpoints))
    return VerifyResult(True, last_good, None, None, len(checkpoints))


@dataclass(frozen=True)
class EventFilter:
    actor_id: uuid.UUID | None = None
    student_id: uuid.UUID | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession, filters: EventFilter, *, limit: int = 100, before_seq: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first; returns the page and the cursor for the next one (None at the end)."""
    c = _events.c
    query = select(
        c.seq,
        c.at,
        c.actor_id,
        c.role,
        c.action,
        c.resource_type,
        c.resource_id,
        c.outcome,
        c.purpose,
        c.emergency,
    )
    if filters.actor_id is not None:
        query = query.where(c.actor_id == filters.actor_id)
    if filters.student_id is not None:
        query = query.where(c.student_id == filters.student_id)
    if filters.action is not None:
        query = query.where(c.action == filters.action)
    if filters.outcome is not None:
        query = query.where(c.outcome == filters.outcome)
    if filters.since is not None:
        query = query.where(c.at >= filters.since)
    if filters.until is not None:
        query = query.where(c.at < filters.until)
    if before_seq is not None:
        query = query.where(c.seq < before_seq)
    rows = (await session.execute(query.order_by(c.seq.desc()).limit(limit + 1))).all()
    items = [
        {
            "seq": r.seq,
            "at": r.at,
            "actor_id": r.actor_id,
            "role": r.role,
            "action": r.action,
            "resource_type": r.resource_type,
            "resource_id": r.resource_id,
            "outcome": r.outcome,
            "purpose": r.purpose,
            "emergency": r.emergency,
        }
        for r in rows[:limit]
    ]
    next_cursor = items[-1]["seq"] if len(rows) > limit else None
    return items, next_cursor
