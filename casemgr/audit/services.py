from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import msgspec
from sqlalchemy import Table, bindparam, event, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util.concurrency import in_greenlet

from casemgr.audit.chain import event_hash
from casemgr.audit.models import AuditEvent, AuditHead
from casemgr.db import holds_writer_turn, transaction_wrote, utcnow

ALLOW = "allow"
DENY = "deny"
HEAD_ID = 1


class Action(StrEnum):
    """Audit actions, named ``resource:action`` like the permissions they mirror."""

    LOGIN = "auth:login"
    LOGOUT = "auth:logout"
    RESTRICTED = "auth:restricted"
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
    KEYS_RESEAL = "keys:reseal"
    KEYS_RETIRE = "keys:retire"
    DEMO_SEED = "demo:seed"
    # -- school administration and onboarding (issue 6) ---------------------------------
    USER_LIST = "user:list"
    USER_DISABLE = "user:disable"
    # Action names, not passwords: ruff (S105) and bandit (B105) mistake two for ones.
    USER_RESET_PASSWORD = "user:reset_password"  # noqa: S105  # nosec B105
    CLASS_ASSIGN_TEACHER = "class:assign_teacher"
    CLASS_UNASSIGN_TEACHER = "class:unassign_teacher"
    PASSWORD_CHANGE = "auth:change_password"  # noqa: S105  # nosec B105
    TOTP_START = "auth:totp_start"
    TOTP_ENROL = "auth:totp_enrol"
    SESSION_END = "auth:end_session"
    STUDENT_IMPORT = "student:import"
    SCHOOL_YEAR_ROLLOVER = "school_year:rollover"
    STUDENT_LEAVE = "student:leave"
    LEAVING_CASE_CLOSE = "case:close"
    LEAVING_PAIRING_END = "pairing:end"
    TRANSFER_REQUEST = "transfer:request"
    TRANSFER_LIST = "transfer:read"
    TRANSFER_APPROVE = "transfer:approve"
    TRANSFER_RECEIVE = "transfer:receive"
    TRANSFER_DECLINE = "transfer:decline"
    # -- care programme (issue 7) -------------------------------------------------------
    CARE_CATEGORY_ADD = "care_category:add"
    CARE_CATEGORY_END = "care_category:end"
    CASE_OPEN = "case:open"
    CASE_LIST = "case:list"
    CASE_READ = "case:read"
    CASE_TIMELINE = "case:timeline"
    CASE_UPDATE = "case:update"
    CASE_CLOSE = "case:close"
    # Entries older than the current school year, asked for explicitly (SPEC P3).
    CASE_READ_EARLIER = "case:read_earlier"
    PAIRING_CREATE = "pairing:create"
    PAIRING_END = "pairing:end"
    PAIRING_LIST = "pairing:list"
    SUPPORT_LOG_WRITE = "support_log:write"
    SUPPORT_LOG_READ = "support_log:read"
    HOME_VISIT_WRITE = "home_visit:write"
    HOME_VISIT_READ = "home_visit:read"
    GUIDANCE_WRITE = "guidance:write"
    VISIT_REQUIREMENT_SET = "visit_requirement:set"
    VISIT_REQUIREMENT_READ = "visit_requirement:read"
    VISIT_PROGRESS_READ = "visit_progress:read"
    TASK_LIST = "task:list"
    TASK_CREATE = "task:create"
    TASK_DONE = "task:done"
    EMERGENCY_GRANT = "emergency_access:grant"
    EMERGENCY_LIST = "emergency_access:list"
    EMERGENCY_REVIEW = "emergency_access:review"
    REPORT_READ = "report:read"
    STUDENT_EXPORT = "student:export"
    STUDENT_ERASE = "student:erase"
    RETENTION_RUN = "retention:run"
    # -- psychological screening (issue 8) ----------------------------------------------
    SCREENING_ROUND_CREATE = "screening_round:create"
    SCREENING_PROGRESS_READ = "screening_round:progress"
    CONSENT_RECORD = "consent:record"
    CONSENT_READ = "consent:read"
    CONSENT_ERASE = "consent:erase"
    SCREENING_RESULT_IMPORT = "screening_result:import"
    SCREENING_RESULT_READ = "screening_result:read"
    SCREENING_QUEUE_READ = "screening_result:queue"
    SCREENING_RESULT_REVIEW = "screening_result:review"
    SCREENING_RESULT_ERASE = "screening_result:erase"
    COUNSELING_NOTE_WRITE = "counseling_note:write"
    COUNSELING_NOTE_READ = "counseling_note:read"
    # -- operations (issue 11) ------------------------------------------------------------
    UNUSUAL_LIST = "audit:unusual_list"
    UNUSUAL_REVIEW = "audit:unusual_review"
    BACKUP_CREATE = "backup:create"
    BACKUP_RESTORE = "backup:restore"
    KEYS_BACKUP = "keys:backup"
    KEYS_RESTORE = "keys:restore"
    # Destroyed data keys of the shred log destroyed again in a restored database.
    KEYS_SHRED_REPLAY = "keys:shred_replay"


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
    "school_year": ADMINISTRATION,
    "transfer": ADMINISTRATION,
    # Care programme (issue 7).
    "visit_requirement": ADMINISTRATION,
    "retention": "retention",
    # Operations (issue 11).
    "backup": "operations",
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
_encode_detail = msgspec.json.Encoder(order="sorted").encode

# Statements built once: the append path runs on every audited request.
_LOCK_HEAD = (
    select(_head.c.last_seq, _head.c.last_hash).where(_head.c.id == HEAD_ID).with_for_update()
)
_INSERT_EVENTS = insert(_events)
_MOVE_HEAD = (
    update(_head)
    .where(_head.c.id == HEAD_ID)
    .values(last_seq=bindparam("new_seq"), last_hash=bindparam("new_hash"))
)


def _event_values(
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
) -> dict[str, Any]:
    """An event's columns but its place in the chain (``seq``, ``at`` and the hashes)."""
    if outcome not in (ALLOW, DENY):
        raise ValueError(f"outcome must be {ALLOW!r} or {DENY!r}")
    actor = actor or SYSTEM
    return {
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


def _append_sync(connection: Connection | Session, events: Sequence[dict[str, Any]]) -> int:
    """Chain ``events`` onto the head under its lock, in the given transaction.

    The head's row lock (``SELECT ... FOR UPDATE``; on SQLite the file's write lock) is
    what serialises appends, between transactions and between processes. Runs in
    SQLAlchemy's greenlet: the async callers reach it through ``run_sync``.
    """
    head = connection.execute(_LOCK_HEAD).one()
    seq, prev = int(head.last_seq), bytes(head.last_hash)
    at = utcnow()
    rows = []
    for values in events:
        seq += 1
        chained = event_hash(prev, seq=seq, at=at, **values)
        rows.append({**values, "seq": seq, "at": at, "prev_hash": prev, "hash": chained})
        prev = chained
    connection.execute(_INSERT_EVENTS, rows)
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev})
    return seq


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
) -> int | None:
    """Append one event for the access the caller's transaction makes.

    Returns its sequence number, or None in a session that defers its events
    (``defer_events``: requests); such an event is written when the transaction commits,
    before the commit returns, and the commit fails if it cannot be written.
    ``detail`` carries facts such as a status code or a count, never names or content.
    """
    values = _event_values(
        action,
        actor=actor,
        resource_type=resource_type,
        resource_id=resource_id,
        student_id=student_id,
        school_id=school_id,
        outcome=outcome,
        purpose=purpose,
        emergency=emergency,
        detail=detail,
    )
    if session.info.get(_APPENDER) is not None:
        session.info.setdefault(_PENDING, []).append(values)
        return None
    return await _append_observed(session, [values])


async def _append_observed(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """``_append_sync`` in the session's transaction, timed for the engine's observer."""
    started = time.perf_counter()
    seq = await session.run_sync(_append_sync, rows)
    appender = _APPENDERS.get(session.get_bind().engine)
    if appender is not None and appender.observer is not None:
        appender.observer("inline", time.perf_counter() - started, len(rows))
    return seq


@dataclass(frozen=True, slots=True)
class Event:
    """One event for :func:`record_many` (the arguments of :func:`record`)."""

    action: str
    resource_type: str
    resource_id: uuid.UUID | str | None = None
    student_id: uuid.UUID | None = None
    school_id: uuid.UUID | None = None
    detail: dict[str, Any] | None = None


async def record_many(session: AsyncSession, events: list[Event], *, actor: Actor | None) -> int:
    """Append several allowed events of one actor in the caller's transaction, chained
    exactly as :func:`record` would chain them one by one, under one lock of the head and
    in one batch of inserts (bulk imports: one event per student). Events the session
    deferred go first. Returns the last sequence number (0: no events)."""
    rows = [
        _event_values(
            event.action,
            actor=actor,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            student_id=event.student_id,
            school_id=event.school_id,
            detail=event.detail,
        )
        for event in events
    ]
    rows[:0] = session.info.pop(_PENDING, None) or []
    if not rows:
        return 0
    return await _append_observed(session, rows)


async def record_denial(session: AsyncSession, action: str, **kwargs: Any) -> int | None:
    """Commit a denial event on its own: the refused request's work is rolled back first.

    The event is durable when this returns (in a deferred session through the appender);
    if it cannot be written this raises, and the caller's refusal becomes a failure.
    """
    return await _commit_denials(session, [_event_values(action, outcome=DENY, **kwargs)])


async def record_denials(session: AsyncSession, denials: list[tuple[str, dict[str, Any]]]) -> None:
    """Commit several denial events at once, on their own, as :func:`record_denial` does
    for one: ``(action, arguments of record)`` each (a refused bulk request that holds
    several refusals, e.g. each registered student of a refused roster import)."""
    rows = [_event_values(action, outcome=DENY, **kwargs) for action, kwargs in denials]
    await _commit_denials(session, rows)


async def _commit_denials(session: AsyncSession, rows: list[dict[str, Any]]) -> int | None:
    await session.rollback()
    if not rows:
        return None
    appender: AuditAppender | None = session.info.get(_APPENDER)
    if appender is not None:
        # Straight to the appender: the refused request's connection is back in the pool
        # (and, on SQLite, its writer's turn given up) while the denials are written.
        session.info.pop(_PENDING, None)
        session.info.pop(_SIDE_WRITES, None)
        await appender.commit(rows)
        return None
    seq = await _append_observed(session, rows)
    await session.commit()
    return seq


# -- group commit --------------------------------------------------------------------------
#
# A request that only reads must still leave its event before it answers (SPEC P4). Each
# one taking the head lock in its own transaction would serialise every request on that
# one row, so a request's session defers its events (``defer_events``), and when its
# transaction commits:
#
# - if the transaction changed data (or, on SQLite, holds the writer's turn), its events
#   are chained in that same transaction just before COMMIT: the data and its trace
#   commit together or not at all, as ``record`` always did;
# - if it only read, its events are handed over (``_write_deferred``) and, once the
#   request's connection is back in the pool, written by ``write_handed_over``: the
#   ``AuditAppender`` writes whatever events are waiting as one batch (one transaction,
#   one head lock, one multi-row INSERT) and returns once that batch committed, raising if
#   it failed. The request answers only after that: its read is answered once its event is
#   durable, or not at all. Nothing was changed by the request, so nothing else is at
#   stake. (Waiting with the connection still held could exhaust the pool: the appender
#   needs one too.)
#
# A denial (``record_denial``) goes to the appender directly, after the rollback. Across
# processes the head's row lock still serialises batches. A batch that fails is retried
# request by request, so that one bad event fails only its own request.

_APPENDER = "casemgr_audit_appender"
_PENDING = "casemgr_audit_pending"
_SIDE_WRITES = "casemgr_audit_side_writes"
_HANDED_OVER = "casemgr_audit_handed_over"
MAX_BATCH_REQUESTS = 256


@dataclass(slots=True)
class _Waiting:
    events: list[dict[str, Any]]
    side_writes: list[Executable]
    done: asyncio.Future[None]


@dataclass(slots=True)
class _LoopQueue:
    waiting: deque[_Waiting] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


@dataclass
class AppenderStats:
    batches: int = 0
    events: int = 0
    failed_batches: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "events": self.events,
            "failed_batches": self.failed_batches,
            "largest_batch": self.largest_batch,
        }


class AuditAppender:
    """Writes the events of read-only transactions in batches (group commit)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Told of every append (path "batch" or "inline", seconds, events): the service's
        # metrics (casemgr.observability, issue 11).
        self.observer: Callable[[str, float, int], None] | None = None
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )
        self.stats = AppenderStats()

    async def commit(
        self, events: list[dict[str, Any]], side_writes: Sequence[Executable] = ()
    ) -> None:
        """Return once ``events`` (and ``side_writes``) are committed; raise if they failed."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue()
        waiting = _Waiting(events, list(side_writes), loop.create_future())
        # Should its request be cancelled meanwhile, nobody else reads the outcome.
        waiting.done.add_done_callback(_retrieve)
        queue.waiting.append(waiting)
        if queue.task is None:
            queue.task = loop.create_task(self._drain(queue))
        # A request cancelled meanwhile (its client left) still has its event written.
        await asyncio.shield(waiting.done)

    async def _drain(self, queue: _LoopQueue) -> None:
        batch: list[_Waiting] = []
        try:
            while queue.waiting:
                batch = []
                while queue.waiting and len(batch) < MAX_BATCH_REQUESTS:
                    batch.append(queue.waiting.popleft())
                try:
                    await self._write(batch)
                except Exception as exc:
                    self.stats.failed_batches += 1
                    if len(batch) == 1:
                        _settle(batch[0], exc)
                        continue
                    for one in batch:  # isolate the event that failed the batch
                        try:
                            await self._write([one])
                        except Exception as single:
                            _settle(one, single)
                        else:
                            _settle(one, None)
                else:
                    for one in batch:
                        _settle(one, None)
                batch = []
        except BaseException as exc:  # cancelled with the loop: nobody may hang
            failure = RuntimeError("the audit appender stopped")
            for one in [*batch, *queue.waiting]:
                _settle(one, failure)
            queue.waiting.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            queue.task = None

    async def _write(self, batch: list[_Waiting]) -> None:
        events = [values for one in batch for values in one.events]
        side_writes = [statement for one in batch for statement in one.side_writes]
        started = time.perf_counter()
        async with self._engine.begin() as connection:
            await connection.run_sync(_write_batch_sync, events, side_writes)
        if self.observer is not None:
            self.observer("batch", time.perf_counter() - started, len(events))
        stats = self.stats
        stats.batches += 1
        stats.events += len(events)
        stats.largest_batch = max(stats.largest_batch, len(events))


def _write_batch_sync(
    connection: Connection, events: list[dict[str, Any]], side_writes: list[Executable]
) -> None:
    if events:
        _append_sync(connection, events)
    for statement in side_writes:
        connection.execute(statement)


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()


def _settle(waiting: _Waiting, error: BaseException | None) -> None:
    if waiting.done.done():
        return
    if error is None:
        waiting.done.set_result(None)
    else:
        waiting.done.set_exception(error)


_APPENDERS: weakref.WeakKeyDictionary[Engine, AuditAppender] = weakref.WeakKeyDictionary()


def appender_for(engine: AsyncEngine) -> AuditAppender:
    """The appender of an engine (one per engine and process)."""
    appender = _APPENDERS.get(engine.sync_engine)
    if appender is None:
        appender = _APPENDERS[engine.sync_engine] = AuditAppender(engine)
    return appender


def defer_events(session: AsyncSession, appender: AuditAppender) -> None:
    """Let ``session`` write its events at commit, through ``appender`` when it only read."""
    session.info[_APPENDER] = appender


async def write_with_trail(session: AsyncSession, statement: Executable) -> None:
    """A small bookkeeping write (a token's last use) that may ride with the audit batch.

    In a deferring session it is executed at commit, in the request's own transaction if
    that changed data, else in the appender's batch; elsewhere at once.
    """
    if session.info.get(_APPENDER) is not None:
        session.info.setdefault(_SIDE_WRITES, []).append(statement)
    else:
        await session.execute(statement)


@event.listens_for(Session, "before_commit")
def _write_deferred(session: Session) -> None:
    appender: AuditAppender | None = session.info.get(_APPENDER)
    if appender is None:
        return
    events: list[dict[str, Any]] = session.info.pop(_PENDING, None) or []
    side_writes: list[Executable] = session.info.pop(_SIDE_WRITES, None) or []
    if not events and not side_writes:
        return
    if session.new or session.dirty or session.deleted:
        session.flush()
    connection = session.connection()
    if transaction_wrote(connection) or holds_writer_turn(connection) or not in_greenlet():
        # A transaction that changed data: its events commit with it, or neither does.
        if events:
            started = time.perf_counter()
            _append_sync(session, events)
            if appender.observer is not None:
                appender.observer("inline", time.perf_counter() - started, len(events))
        for statement in side_writes:
            session.execute(statement)
        return
    handed_over = session.info.setdefault(_HANDED_OVER, ([], []))
    handed_over[0].extend(events)
    handed_over[1].extend(side_writes)


async def write_handed_over(session: AsyncSession) -> None:
    """Write the events of the session's read-only transactions (``defer_events``): call it
    after the session's last commit, with its connection given back, before answering.
    Raises if they cannot be written: the request must then fail."""
    handed_over = session.info.pop(_HANDED_OVER, None)
    appender: AuditAppender | None = session.info.get(_APPENDER)
    if handed_over is None or appender is None:
        return
    events, side_writes = handed_over
    if events or side_writes:
        await appender.commit(events, side_writes)


@event.listens_for(Session, "after_transaction_end")
def _forget_deferred(session: Session, transaction: SessionTransaction) -> None:
    # Events of work that was rolled back (or closed) are dropped with it, as inline
    # appends would be; a commit has taken its events already.
    if transaction.parent is None and session.info.get(_APPENDER) is not None:
        session.info.pop(_PENDING, None)
        session.info.pop(_SIDE_WRITES, None)


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
