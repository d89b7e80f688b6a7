"""Sealing the chain with signed checkpoints, and verifying it against them.

A checkpoint is stored twice: a row in ``audit_checkpoints`` and a line in the checkpoint
file (and then sent to the external anchor, ``sink``). Neither the database nor the
private key is trusted about its own anchors:

- verification trusts only the public keys it is given (``audit-signing.pub`` or an
  auditor's copy) and the key transitions they sign; it holds the database's checkpoints
  against the file's, and fails when one lacks a checkpoint the other has, when they differ,
  or when an event older than the seal deadline is covered by no checkpoint;
- signing extends only the last checkpoint it can trust (the database and the file agree
  on it, its signature holds under a pinned key, the stored event at its seq still has its
  hash, and every later event links up to the head), checking just the events after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from casemgr import clock
from casemgr.audit.anchors import (
    AnchorFile,
    Trust,
    anchor_lock,
    append_records,
    read_anchor_file,
    resolve_trust,
)
from casemgr.audit.chain import GENESIS_HASH, Checkpoint, event_hash, key_id, sign_checkpoint
from casemgr.audit.chain import _encode as chain_encoder
from casemgr.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from casemgr.audit.services import HEAD_ID, Action, record
from casemgr.audit.sink import deliver_pending
from casemgr.db import read_only_engine

if TYPE_CHECKING:
    from casemgr.crypto.keyring import KeyRing
    from casemgr.settings import Settings

log = logging.getLogger("casemgr.audit")

_events = cast(Table, AuditEvent.__table__)
_head = cast(Table, AuditHead.__table__)
_checkpoints = cast(Table, AuditCheckpoint.__table__)
_c = _events.c
# Every hashed column in event_hash's order, then the stored links.
_CHAIN_COLUMNS = (
    _c.seq,
    _c.at,
    _c.actor_id,
    _c.role,
    _c.school_id,
    _c.action,
    _c.resource_type,
    _c.resource_id,
    _c.student_id,
    _c.outcome,
    _c.purpose,
    _c.emergency,
    _c.detail,
    _c.client_addr,
    _c.prev_hash,
    _c.hash,
)


class CheckpointRefused(Exception):
    """Nothing was signed: the chain does not extend the last checkpoint that can be trusted.

    The message names sequence numbers and files, never event content or key bytes.
    """


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None = None
    checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The command line's answer: the reason is included when something is wrong."""
        answer: dict[str, Any] = {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
        }
        if not self.ok:
            answer["reason"] = self.reason
        return answer


@dataclass(frozen=True)
class _Walk:
    last_seq: int
    last_hash: bytes
    bad_seq: int | None
    reason: str | None
    seen: dict[int, bytes]


async def _walk(
    session: AsyncSession,
    *,
    after: int,
    prev: bytes,
    until: int | None = None,
    wanted: set[int] | frozenset[int] = frozenset(),
    batch_size: int,
    split_at: int | None = None,
    apart: bool = False,
) -> _Walk:
    """Recompute the chain from the event after ``after`` (whose hash is ``prev``).

    ``apart``: the walk may read committed events on connections of its own (verification;
    not signing, whose transaction may hold an event it has just chained).

    Rows come straight from the driver (``_raw_batches``), the next batch fetched while
    this one is hashed; a database the fast path does not know is read through
    SQLAlchemy (``_orm_batches``). Both give ``event_hash`` the values the ORM would.
    """
    connection = await session.connection()
    path = _sqlite_file(connection) if apart else None
    try:
        if path is not None:
            return await _sqlite_walk(
                session, path, after=after, prev=prev, until=until, wanted=wanted
            )
        batches = await _raw_batches(connection, after, until, batch_size, split_at=split_at)
        if batches is not None:
            return await _check_batches(session, batches, after=after, prev=prev, wanted=wanted)
    except sqlite3.Error as exc:
        # SQLite keeps any value in any column: a row altered behind the triggers may hold
        # one its JSON functions refuse (a blob where text belongs). The ORM path decides
        # such a chain, from the same start, as it decides any other.
        log.warning("audit verify: the fast path stopped (%s); walking the ORM rows", exc)
    orm_batches = _orm_batches(session, after, until, batch_size)
    return await _check_batches(session, orm_batches, after=after, prev=prev, wanted=wanted)


async def _check_batches(
    session: AsyncSession,
    batches: _Prefetched | _Streams | AsyncGenerator[list[Sequence[Any]], None],
    *,
    after: int,
    prev: bytes,
    wanted: set[int] | frozenset[int],
) -> _Walk:
    expected = after + 1
    seen: dict[int, bytes] = {}
    bad: tuple[int, str] | None = None
    sha256 = hashlib.sha256
    try:
        async for batch in batches:
            # Each row: (seq, the encoded columns that event_hash hashes, prev_hash, hash).
            for seq, encoded, stored_prev, stored_hash in batch:
                if seq != expected:
                    bad = (expected, f"sequence gap: expected {expected}, found {seq}")
                    break
                computed = sha256(prev + encoded).digest()
                if stored_hash != computed or stored_prev != prev:
                    # The database's encoding may differ from msgspec's for a value stored
                    # in an unusual way: decide on the ORM's values with event_hash itself,
                    # exactly as the reference path would.
                    if isinstance(batches, _Prefetched):
                        await batches.quiesce()
                    row = await _orm_row(session, seq)
                    computed = event_hash(prev, *row[:14])
                    if bytes(row[14]) != prev or bytes(row[15]) != computed:
                        bad = (seq, "event does not match the chain")
                        break
                if seq in wanted:
                    seen[seq] = computed
                prev = computed
                expected += 1
            if bad is not None:
                break
    finally:
        await batches.aclose()
    if bad is not None:
        return _Walk(expected - 1, prev, bad[0], bad[1], seen)
    return _Walk(expected - 1, prev, None, None, seen)


def _sqlite_file(connection: AsyncConnection) -> str | None:
    """The file of an aiosqlite database, which the walk may read on a thread of its own."""
    dialect, database = connection.dialect, connection.engine.url.database
    if dialect.name != "sqlite" or dialect.driver != "aiosqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return database


@dataclass(frozen=True)
class _Stop:
    """Where a synchronous walk stopped: its last good event, and why it stopped there."""

    last_seq: int
    last_hash: bytes
    seen: dict[int, bytes]
    gap_at: int | None = None  # the sequence number found instead of the next one
    unmatched: int | None = None  # an event the database's encoding did not match


def _sqlite_walk_sync(path: str, after: int, until: int | None, prev: bytes, wanted: Any) -> _Stop:
    """Fetch and hash in one thread, on a read-only connection of its own.

    Python's sqlite3 hands the GIL over on every row it steps: fetching on aiosqlite's
    thread while the event loop hashes makes the two threads take turns, and one thread
    doing both is quicker.
    """
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        # Built from constants only; the bounds are parameters.
        sql = f"SELECT {_SQLITE_COLUMNS} FROM audit_events WHERE seq > ?"  # noqa: S608  # nosec B608
        args: list[int] = [after]
        if until is not None:
            sql += " AND seq <= ?"
            args.append(until)
        cursor = connection.execute(sql + " ORDER BY seq", args)
        sha256, expected = hashlib.sha256, after + 1
        seen: dict[int, bytes] = {}
        while batch := cursor.fetchmany(_SYNC_BATCH):
            for seq, encoded, stored_prev, stored_hash in batch:
                if seq != expected:
                    return _Stop(expected - 1, prev, seen, gap_at=seq)
                computed = sha256(prev + encoded).digest()
                if stored_hash != computed or stored_prev != prev:
                    return _Stop(expected - 1, prev, seen, unmatched=seq)
                if seq in wanted:
                    seen[seq] = computed
                prev = computed
                expected += 1
        return _Stop(expected - 1, prev, seen)
    finally:
        connection.close()


_SYNC_BATCH = 5_000


async def _sqlite_walk(
    session: AsyncSession,
    path: str,
    *,
    after: int,
    prev: bytes,
    until: int | None,
    wanted: set[int] | frozenset[int],
) -> _Walk:
    """``_check_batches`` for a SQLite file: the same decisions, the rows read on a thread."""
    seen: dict[int, bytes] = {}
    while True:
        stop = await asyncio.to_thread(_sqlite_walk_sync, path, after, until, prev, wanted)
        seen.update(stop.seen)
        after, prev = stop.last_seq, stop.last_hash
        expected = after + 1
        if stop.gap_at is not None:
            reason = f"sequence gap: expected {expected}, found {stop.gap_at}"
            return _Walk(after, prev, expected, reason, seen)
        if stop.unmatched is None:
            return _Walk(after, prev, None, None, seen)
        # As in _check_batches: the ORM's values and event_hash decide.
        row = await _orm_row(session, stop.unmatched)
        computed = event_hash(prev, *row[:14])
        if bytes(row[14]) != prev or bytes(row[15]) != computed:
            return _Walk(after, prev, stop.unmatched, "event does not match the chain", seen)
        if stop.unmatched in wanted:
            seen[stop.unmatched] = computed
        after, prev = stop.unmatched, computed


async def _orm_batches(
    session: AsyncSession, after: int, until: int | None, batch_size: int
) -> AsyncGenerator[list[Sequence[Any]], None]:
    """Events through SQLAlchemy, typed by the models (the reference for ``_raw_batches``)."""
    query = select(*_CHAIN_COLUMNS).where(_c.seq > after)
    if until is not None:
        query = query.where(_c.seq <= until)
    result = await session.stream(query.order_by(_c.seq).execution_options(yield_per=batch_size))
    try:
        async for partition in result.partitions(batch_size):
            yield [
                (
                    row[0],
                    chain_encoder(row[:13] if row[13] is None else row[:14]),
                    bytes(row[14]),
                    bytes(row[15]),
                )
                for row in partition
            ]
    finally:
        await result.close()


async def _orm_row(session: AsyncSession, seq: int) -> Sequence[Any]:
    return (await session.execute(select(*_CHAIN_COLUMNS).where(_c.seq == seq))).one()


# The fast path asks the database for what ``event_hash`` hashes: the JSON array that
# msgspec makes of an event's columns (13 of them, or 14 with a client address; ids as
# canonical UUID text, ``at`` as RFC 3339 in UTC with microseconds only when there are
# any, the flag as true/false), as bytes. Four values per row instead of sixteen objects,
# and plain concatenation in the database: reading rows is most of what verification
# costs. Only the detail (JSON itself) can hold a quote or a backslash, so only it is
# escaped; an event whose encoding differs anyway (a value stored in an unusual form) is
# decided by ``event_hash`` on the ORM's values (``_orm_row``), as the reference path would.


def _concat(items: Sequence[str]) -> str:
    return "'[' || " + " || ',' || ".join(items) + " || ']'"


def _quoted(expression: str) -> str:
    return f"""COALESCE('"' || {expression} || '"', 'null')"""


def _escaped(expression: str) -> str:
    return _quoted(f"""replace(replace({expression}, '\\', '\\\\'), '"', '\\"')""")


def _items(at: str, uuid_text: Any, flag: str, seq: str) -> list[str]:
    return [
        seq,
        f"""'"' || {at} || '"'""",
        _quoted(uuid_text("actor_id")),
        _quoted("role"),
        _quoted(uuid_text("school_id")),
        _quoted("action"),
        _quoted("resource_type"),
        _quoted("resource_id"),
        _quoted(uuid_text("student_id")),
        _quoted("outcome"),
        _quoted("purpose"),
        flag,
        _escaped("detail"),
    ]


def _encoded(items: list[str], to_bytes: str) -> str:
    with_client = _concat([*items, _quoted("client_addr")])
    array = f"CASE WHEN client_addr IS NULL THEN {_concat(items)} ELSE {with_client} END"
    return to_bytes.format(array)


def _sqlite_uuid(column: str) -> str:
    # Stored as 32 hex digits (SQLAlchemy's Uuid on SQLite); one format() call is quicker
    # there than five substrings joined (the UUIDs are half of what the encoding costs).
    return (
        f"format('%.8s-%.4s-%.4s-%.4s-%s', {column}, substr({column}, 9),"
        f" substr({column}, 13), substr({column}, 17), substr({column}, 21))"
    )


_PG_ITEMS = _items(
    at="""replace(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '.000000', '')"""
    " || 'Z'",
    uuid_text=lambda column: f"{column}::text",
    flag="CASE WHEN emergency THEN 'true' ELSE 'false' END",
    seq="seq::text",
)
# ``at`` is stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC).
_SQLITE_UUID = "CASE WHEN {0} IS NULL THEN NULL ELSE {1} END"
# SQLite's json_array, quicker there than concatenation, encodes these values as msgspec
# does. ``at`` is stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC).
_SQLITE_ITEMS = [
    "seq",
    "replace(substr(at, 1, 10) || 'T' || substr(at, 12), '.000000', '') || 'Z'",
    _SQLITE_UUID.format("actor_id", _sqlite_uuid("actor_id")),
    "role",
    _SQLITE_UUID.format("school_id", _sqlite_uuid("school_id")),
    "action",
    "resource_type",
    "resource_id",
    _SQLITE_UUID.format("student_id", _sqlite_uuid("student_id")),
    "outcome",
    "purpose",
    "CASE WHEN emergency THEN json('true') ELSE json('false') END",
    "detail",
]
_SQLITE_ENCODED = (
    f"CAST(CASE WHEN client_addr IS NULL THEN json_array({', '.join(_SQLITE_ITEMS)})"
    f" ELSE json_array({', '.join([*_SQLITE_ITEMS, 'client_addr'])}) END AS BLOB)"
)
_PG_COLUMNS = f"seq, {_encoded(_PG_ITEMS, 'convert_to({}, {})'.format('{}', repr('UTF8')))}"
_PG_COLUMNS += ", prev_hash, hash"
_SQLITE_COLUMNS = f"seq, {_SQLITE_ENCODED}, prev_hash, hash"


def _splits(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _fetcher(connection: AsyncConnection) -> Any:
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "asyncpg":
        return _asyncpg_fetches
    if dialect.name == "sqlite" and dialect.driver == "aiosqlite":
        return _sqlite_fetches
    return None


async def _raw_batches(
    connection: AsyncConnection,
    after: int,
    until: int | None,
    batch_size: int,
    *,
    split_at: int | None = None,
) -> _Prefetched | _Streams | None:
    """The fast path's batches, or None where it does not apply.

    With ``split_at`` the two halves of the range are read at once, each on a read-only
    connection of its own (reading is what costs: two cores share it), and handed over in
    order; the session's connection stays free for ``_orm_row``.
    """
    fetches = _fetcher(connection)
    if fetches is None:
        return None
    if split_at is not None:
        reader = read_only_engine(connection.engine)
        ranges = [(after, split_at), (split_at, until)]
        return _Streams(
            [_on_own_connection(reader, fetches, lo, hi, batch_size) for lo, hi in ranges]
        )
    # The transaction's first statement goes through SQLAlchemy, which begins it.
    await connection.exec_driver_sql("SELECT 1")
    return _Prefetched(fetches(connection, after, until, batch_size))


async def _on_own_connection(
    engine: AsyncEngine, fetches: Any, after: int, until: int | None, batch_size: int
) -> AsyncGenerator[list[Sequence[Any]], None]:
    async with engine.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")
        batches = fetches(connection, after, until, batch_size)
        try:
            async for fetch in batches:
                batch = await fetch
                yield batch
                if not batch:
                    return
        finally:
            await batches.aclose()


class _Streams:
    """Batches of several ranges, read at the same time and handed over in range order."""

    def __init__(self, producers: list[AsyncGenerator[list[Sequence[Any]], None]]) -> None:
        self._queues: list[asyncio.Queue[Any]] = [asyncio.Queue(maxsize=2) for _ in producers]
        self._tasks = [
            asyncio.ensure_future(self._produce(producer, queue))
            for producer, queue in zip(producers, self._queues, strict=True)
        ]
        self._index = 0

    @staticmethod
    async def _produce(
        producer: AsyncGenerator[list[Sequence[Any]], None], queue: asyncio.Queue[Any]
    ) -> None:
        try:
            async for batch in producer:
                await queue.put(batch)
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put(exc)
        finally:
            await producer.aclose()

    def __aiter__(self) -> _Streams:
        return self

    async def __anext__(self) -> list[Sequence[Any]]:
        while self._index < len(self._queues):
            item = await self._queues[self._index].get()
            if isinstance(item, Exception):
                raise item
            if item:
                return list(item)
            self._index += 1
        raise StopAsyncIteration

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _asyncpg_fetches(
    connection: AsyncConnection, after: int, until: int | None, batch_size: int
) -> AsyncGenerator[Awaitable[list[Sequence[Any]]], None]:
    """asyncpg's values are what the models give (aware UTC datetimes, UUIDs, bytes)."""
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    # Built from constants only; the bounds are parameters.
    sql = f"SELECT {_PG_COLUMNS} FROM audit_events WHERE seq > $1"  # noqa: S608  # nosec B608
    args: list[int] = [after]
    if until is not None:
        sql += " AND seq <= $2"
        args.append(until)
    cursor = await driver.cursor(sql + " ORDER BY seq", *args)
    while True:
        yield cursor.fetch(batch_size)


async def _sqlite_fetches(
    connection: AsyncConnection, after: int, until: int | None, batch_size: int
) -> AsyncGenerator[Awaitable[list[Sequence[Any]]], None]:
    """SQLite's stored forms, put in the forms the models give (see ``_sqlite_row``)."""
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    # Built from constants only; the bounds are parameters.
    sql = f"SELECT {_SQLITE_COLUMNS} FROM audit_events WHERE seq > ?"  # noqa: S608  # nosec B608
    args: list[int] = [after]
    if until is not None:
        sql += " AND seq <= ?"
        args.append(until)
    cursor = await driver.execute(sql + " ORDER BY seq", args)
    try:

        async def fetch() -> list[Sequence[Any]]:
            return list(await cursor.fetchmany(batch_size))

        while True:
            yield fetch()
    finally:
        await cursor.close()


class _Prefetched:
    """Batches in order, each next one already being fetched while the caller hashes."""

    def __init__(self, fetches: AsyncGenerator[Awaitable[list[Sequence[Any]]], None]) -> None:
        self._fetches = fetches
        self._pending: asyncio.Future[list[Sequence[Any]]] | None = None

    def __aiter__(self) -> _Prefetched:
        return self

    async def _next_fetch(self) -> asyncio.Future[list[Sequence[Any]]]:
        return asyncio.ensure_future(await anext(self._fetches))

    async def __anext__(self) -> list[Sequence[Any]]:
        batch = await (self._pending or await self._next_fetch())
        if not batch:
            self._pending = None
            raise StopAsyncIteration
        self._pending = await self._next_fetch()
        await asyncio.sleep(0)  # let the next fetch reach the database before hashing
        return batch

    async def quiesce(self) -> None:
        """Wait for the fetch in flight (before the connection is used for anything else)."""
        if self._pending is not None:
            await asyncio.wait([self._pending])

    async def aclose(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
        if pending is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        await self._fetches.aclose()


async def head_seq(session: AsyncSession) -> int:
    """The sequence number of the chain's newest event (0 for an empty chain)."""
    seq = await session.scalar(select(_head.c.last_seq).where(_head.c.id == HEAD_ID))
    return int(seq or 0)


def _as_checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(row.seq, bytes(row.hash), row.at, row.key_id, bytes(row.signature))


_CHECKPOINT_ROWS = select(
    _checkpoints.c.seq,
    _checkpoints.c.hash,
    _checkpoints.c.at,
    _checkpoints.c.key_id,
    _checkpoints.c.signature,
)


async def _database_checkpoints(session: AsyncSession) -> dict[int, Checkpoint]:
    rows = await session.execute(_CHECKPOINT_ROWS)
    return {row.seq: _as_checkpoint(row) for row in rows}


async def _database_checkpoint(session: AsyncSession, seq: int) -> Checkpoint | None:
    row = (await session.execute(_CHECKPOINT_ROWS.where(_checkpoints.c.seq == seq))).one_or_none()
    return None if row is None else _as_checkpoint(row)


async def _first_stale_event(session: AsyncSession, after: int, deadline: timedelta) -> int | None:
    cutoff = clock.now() - deadline
    stale = await session.scalar(select(func.min(_c.seq)).where(_c.seq > after, _c.at < cutoff))
    return None if stale is None else int(stale)


def _age(deadline: timedelta) -> str:
    return f"{int(deadline.total_seconds())} s"


async def verify_chain(
    session: AsyncSession,
    public_keys: Sequence[Ed25519PublicKey],
    checkpoint_file: Path,
    *,
    seal_deadline: timedelta,
    batch_size: int = 20_000,
) -> VerifyResult:
    """Walk the whole chain and hold it against the checkpoints that can be trusted.

    Detects changed, deleted, inserted and reordered events (the chain breaks at the first
    one); events cut off the end or a chain rebuilt wholesale (a checkpoint no longer
    matches); checkpoints signed by no trusted key; a checkpoint file that is missing,
    short, or at odds with the database; and events left unsealed past ``seal_deadline``.
    ``first_bad_seq`` is the first sequence number that cannot be vouched for: the first
    event after the last checkpoint that the file, the pinned keys and the chain agree on
    (or the broken or unsealed event itself).
    """
    anchor = read_anchor_file(checkpoint_file)
    trust = resolve_trust(public_keys, anchor.transitions)
    in_file: dict[int, Checkpoint] = {}
    conflicting: set[int] = set()
    for cp in anchor.checkpoints:
        if in_file.setdefault(cp.seq, cp) != cp:
            conflicting.add(cp.seq)
    in_db = await _database_checkpoints(session)
    wanted = set(in_file) | set(in_db)
    # The head is read before the walk: events appended while the walk runs (a service
    # answering requests meanwhile) then only lengthen the walk, never look missing.
    head = await head_seq(session)

    walk = await _walk(
        session,
        after=0,
        prev=GENESIS_HASH,
        wanted=wanted,
        batch_size=batch_size,
        # A long chain is read in two halves at once (the hashing stays in order), on
        # PostgreSQL only: two threads reading one SQLite file through Python's sqlite3
        # hand the GIL back and forth on every row and are slower than one.
        split_at=head // 2 if head >= 4 * batch_size and _splits(session) else None,
        apart=True,
    )
    if walk.bad_seq is not None:
        return VerifyResult(False, walk.bad_seq, walk.bad_seq, walk.reason, len(wanted))
    last_good = walk.last_seq

    candidates: list[tuple[int, str]] = list(trust.problems)
    if head > last_good:
        candidates.append((last_good + 1, f"events after {last_good} are missing (head at {head})"))
    vouched = 0
    for seq in sorted(wanted):
        filed, stored = in_file.get(seq), in_db.get(seq)
        if filed is None:
            if not anchor.exists:
                why = (
                    f"the checkpoint file {checkpoint_file} is missing, but the database"
                    f" holds {len(in_db)} checkpoints"
                )
            else:
                why = f"checkpoint at {seq} is in the database but not in the checkpoint file"
            # Only the file's copy vouches: one the database alone holds proves nothing.
            candidates.append((vouched + 1, why))
            continue
        if seq in conflicting:
            candidates.append((vouched + 1, f"the checkpoint file holds two checkpoints at {seq}"))
            continue
        problem = trust.checkpoint_problem(filed)
        if problem is not None:
            # A forged checkpoint vouches for nothing: what only it covers is suspect, and
            # naming its own seq would wrongly suggest that everything before it is sound.
            candidates.append((vouched + 1, problem))
            continue
        if seq > last_good:
            candidates.append(
                (last_good + 1, f"events after {last_good} are missing (checkpoint at {seq})")
            )
            continue
        if walk.seen.get(seq) != filed.hash:
            candidates.append((vouched + 1, f"chain rebuilt: checkpoint at {seq} does not match"))
            continue
        if stored is None:
            candidates.append(
                (
                    vouched + 1,
                    f"checkpoint at {seq} is in the checkpoint file but not in the database",
                )
            )
        elif stored != filed:
            candidates.append(
                (vouched + 1, f"checkpoint at {seq} differs between the database and the file")
            )
        vouched = max(vouched, seq)
    if anchor.problem:
        candidates.append((vouched + 1, anchor.problem))
    stale = await _first_stale_event(session, vouched, seal_deadline)
    if stale is not None:
        candidates.append(
            (
                stale,
                f"event {stale} is older than the seal deadline ({_age(seal_deadline)})"
                " and no checkpoint covers it",
            )
        )
    if candidates:
        first, why = min(candidates, key=lambda candidate: candidate[0])  # first found wins
        return VerifyResult(False, last_good, first, why, len(wanted))
    return VerifyResult(True, last_good, None, None, len(wanted))


def _disagreement(anchor: AnchorFile, in_db: int) -> str:
    in_file = len(anchor.checkpoints)
    if not anchor.exists:
        return (
            f"the checkpoint file {anchor.path} is missing, but the database holds"
            f" {in_db} checkpoints"
        )
    if in_db > in_file:
        return f"the database holds {in_db} checkpoints, the checkpoint file only {in_file}"
    if in_db < in_file:
        return f"the checkpoint file holds {in_file} checkpoints, the database only {in_db}"
    return "the latest checkpoint differs between the database and the checkpoint file"


async def _trusted_anchor(
    session: AsyncSession, anchor: AnchorFile, trust: Trust
) -> tuple[Checkpoint | None, Checkpoint | None]:
    """The last checkpoint that signing may extend, and a file checkpoint the database
    lacks because a checkpoint was interrupted after its line was written."""
    filed = anchor.checkpoints
    count, latest = (
        await session.execute(select(func.count(), func.max(_checkpoints.c.seq)))
    ).one()
    stored = None
    if latest is not None:
        stored = await _database_checkpoint(session, int(latest))
    last = filed[-1] if filed else None
    recovered = None
    previous = filed[-2] if len(filed) > 1 else None
    if (
        last is not None
        and len(filed) == count + 1
        and (latest is None or last.seq > latest)
        and stored == previous
    ):
        # The line is written before the row is committed; a crash in between leaves the
        # file one checkpoint ahead. The file is the trusted copy, so the row is restored.
        recovered = last
    elif len(filed) != count or stored != last:
        raise CheckpointRefused(_disagreement(anchor, int(count)))
    if last is None:
        return None, None
    problem = trust.checkpoint_problem(last)
    if problem is not None:
        raise CheckpointRefused(problem)
    event = await session.scalar(select(_c.hash).where(_c.seq == last.seq))
    if event is None or bytes(event) != last.hash:
        raise CheckpointRefused(f"event {last.seq} no longer matches the checkpoint that sealed it")
    return last, recovered


async def _insert(session: AsyncSession, cp: Checkpoint) -> None:
    await session.execute(
        insert(_checkpoints).values(
            seq=cp.seq, hash=cp.hash, at=cp.at, key_id=cp.key_id, signature=cp.signature
        )
    )


async def sign_under_lock(
    sessions: async_sessionmaker[AsyncSession],
    signing_key: Ed25519PrivateKey,
    public_keys: Sequence[Ed25519PublicKey],
    checkpoint_file: Path,
    *,
    seal_deadline: timedelta,
    adopt_unanchored: bool,
    batch_size: int,
) -> Checkpoint | None:
    """``write_checkpoint`` without the lock and the delivery, for a caller holding the lock."""
    anchor = read_anchor_file(checkpoint_file)
    if anchor.problem:
        raise CheckpointRefused(anchor.problem)
    trust = resolve_trust(public_keys, anchor.transitions)
    if trust.problems:
        raise CheckpointRefused(trust.problems[0][1])
    signer = key_id(signing_key.public_key())
    if signer not in trust.keys:
        raise CheckpointRefused(
            f"the signing key {signer} is not among the trusted audit public keys"
        )
    if signer in trust.retired_after:
        raise CheckpointRefused(f"the signing key {signer} has handed over to its successor")

    async with sessions() as session, session.begin():
        last, recovered = await _trusted_anchor(session, anchor, trust)
        after, prev = (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)
        if last is None and await _first_stale_event(session, 0, seal_deadline) is not None:
            # What a chain rebuilt after its checkpoints and file were deleted looks like.
            if not adopt_unanchored:
                raise CheckpointRefused(
                    "nothing anchors the chain, yet it holds events older than the seal"
                    f" deadline ({_age(seal_deadline)}): restore the checkpoint file (an"
                    " anchor's copy will do), or adopt the chain as it stands with"
                    " 'casemgr audit checkpoint --adopt-unanchored'"
                )
            await record(
                session,
                Action.AUDIT_CHECKPOINT,
                actor=None,
                resource_type="audit",
                detail={"adopted_unanchored": True},
            )
        head = (
            await session.execute(
                select(_head.c.last_seq, _head.c.last_hash).where(_head.c.id == HEAD_ID)
            )
        ).one()
        if head.last_seq < after:
            raise CheckpointRefused(
                f"the chain ends at {head.last_seq}, before its last checkpoint at {after}"
            )
        walk = await _walk(
            session, after=after, prev=prev, until=int(head.last_seq), batch_size=batch_size
        )
        if walk.bad_seq is not None:
            raise CheckpointRefused(f"event {walk.bad_seq}: {walk.reason}")
        if walk.last_seq != head.last_seq or walk.last_hash != bytes(head.last_hash):
            raise CheckpointRefused(f"the chain head does not match event {walk.last_seq}")
        if recovered is not None:
            await _insert(session, recovered)
            log.warning("restored the interrupted audit checkpoint from the checkpoint file")
        if head.last_seq == after:
            return None
        at = clock.now()
        checkpoint = Checkpoint(
            seq=int(head.last_seq),
            hash=bytes(head.last_hash),
            at=at,
            key_id=signer,
            signature=sign_checkpoint(signing_key, int(head.last_seq), bytes(head.last_hash), at),
        )
        await _insert(session, checkpoint)
        await session.flush()
        # The line goes out before the row commits; see _trusted_anchor for the recovery.
        append_records(anchor, [checkpoint])
    return checkpoint


async def deliver(checkpoint_file: Path, anchor_url: str | None) -> None:
    """Send the external anchor what it has not taken yet (call under ``anchor_lock``)."""
    if anchor_url is None:
        return
    delivery = await asyncio.to_thread(deliver_pending, checkpoint_file, anchor_url)
    if delivery.waiting:
        log.warning(
            "audit anchor delivery failed (%s); %d records wait for the next checkpoint",
            delivery.error,
            delivery.waiting,
        )


async def write_checkpoint(
    sessions: async_sessionmaker[AsyncSession],
    signing_key: Ed25519PrivateKey,
    public_keys: Sequence[Ed25519PublicKey],
    checkpoint_file: Path,
    *,
    seal_deadline: timedelta,
    anchor_url: str | None = None,
    adopt_unanchored: bool = False,
    batch_size: int = 20_000,
) -> Checkpoint | None:
    """Sign the chain's tip, store it in the file and the database, send it to the anchor.

    Returns None when there is nothing new to seal. Raises CheckpointRefused, signing
    nothing, when the chain does not extend the last checkpoint it can trust, or when
    nothing anchors a chain whose events are already older than ``seal_deadline`` (unless
    ``adopt_unanchored``: then the adoption is audited and sealed with the rest).
    """
    async with anchor_lock(checkpoint_file):
        checkpoint = await sign_under_lock(
            sessions,
            signing_key,
            public_keys,
            checkpoint_file,
            seal_deadline=seal_deadline,
            adopt_unanchored=adopt_unanchored,
            batch_size=batch_size,
        )
        await deliver(checkpoint_file, anchor_url)
    return checkpoint


async def seal(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    settings: Settings,
    *,
    adopt_unanchored: bool = False,
) -> Checkpoint | None:
    """``write_checkpoint`` with the key ring's signing key and pinned public keys."""
    return await write_checkpoint(
        sessions,
        keyring.audit_signing_key,
        keyring.audit_public_keys,
        settings.checkpoint_file,
        seal_deadline=settings.seal_deadline,
        anchor_url=settings.audit_anchor_url,
        adopt_unanchored=adopt_unanchored,
    )
