"""Database plumbing: metadata, engine, sessions.

Every table is declared on ``Base``; its naming convention keeps constraint names stable
so that Alembic migrations and the models never drift apart silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    AsyncAdapt_aiosqlite_ss_cursor,
)
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_, in_greenlet

from casemgr import clock

log = logging.getLogger("casemgr.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend.

    SQLite has no time zones; without this, values written aware come back naive and
    anything hashed over them (the audit chain) would differ between write and read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC one is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return clock.now()


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine with the per-backend settings this service relies on.

    An engine belongs to one process; on SQLite its writer queue is per event loop, so a
    program that runs several loops in turn (the command line, tests) may share it.
    """
    if database_url.startswith("sqlite"):
        if _is_memory(database_url):
            # Every connection to ":memory:" is a database of its own: nothing to pool.
            kwargs.setdefault("poolclass", NullPool)
        else:
            kwargs.setdefault("pool_size", 10)
            kwargs.setdefault("max_overflow", 10)
        engine = create_async_engine(
            database_url, connect_args={"timeout": 30}, module=_sqlite_dbapi(), **kwargs
        )
        _configure_sqlite(engine, writer_queue(database_url))
        _track_writes(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_async_engine(database_url, **kwargs)
    _track_writes(engine)
    return engine


def _is_memory(database_url: str) -> bool:
    database = make_url(database_url).database
    return not database or database == ":memory:" or "mode=memory" in database_url


# -- SQLite: one writer at a time, first come first served; readers never wait ------------
#
# SQLite allows one writer per file. Left to itself, a writer that finds the file locked
# sleeps in SQLite's busy handler and retries at growing intervals: under load, waiters
# are served in no order and some wait for seconds. So this process queues its writers
# itself, fairly, before they touch the file (``WriterQueue``), and SQLite's busy handler
# only arbitrates between processes (the command line beside the service).
#
# Transactions begin IMMEDIATE (taking the file's write lock at once, so that two
# transactions never both read and then both try to write) after their turn in the queue.
# A session opened with ``read_only=True`` (``open_session``; the service uses it for GET
# requests) does not queue and opens no transaction: each of its statements reads what is
# committed when it runs (in WAL mode, while one writer writes), as PostgreSQL's READ
# COMMITTED does. Should it write after all, it takes its turn and begins IMMEDIATE at its
# first write (``_before_execute``), so it never fails on a stale snapshot.

WRITER_WAIT_SECONDS = 30.0  # as long as SQLite's own busy timeout, then "database is locked"
# A turn that took longer than this is logged (``SLOW_WRITER_WAIT_MESSAGE``) and counted
# (``WriterStats.over_one_second``): a writer should never wait that long for the file.
SLOW_WRITER_WAIT_SECONDS = 1.0
SLOW_WRITER_WAIT_MESSAGE = "slow SQLite writer turn: waited %.3f s (more than %.1f s)"
READ_ONLY = "casemgr_read_only"
_WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
# Keys in a pooled connection's ``info`` (kept with the DBAPI connection across checkouts).
_HOLDS_WRITER = "casemgr_holds_writer"
_READ_MODE = "casemgr_read_mode"
# Statements that make a reader a writer (SAVEPOINT too: inside it, a write could no longer
# begin the IMMEDIATE transaction it needs).
_UPGRADE_PREFIXES = (*_WRITE_PREFIXES, "SAVEPOINT")
WROTE = "casemgr_wrote"


class WriterTimeout(OperationalError):
    """A writer waited longer than ``WRITER_WAIT_SECONDS`` for its turn."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"waited {waited:.1f} s for the database writer lock", None, Exception())


@dataclass
class WriterStats:
    """How long writers waited for their turn (for the benchmarks and diagnostics)."""

    turns: int = 0
    waited: int = 0  # turns that had to wait at all
    total_wait: float = 0.0
    max_wait: float = 0.0
    over_one_second: int = 0
    timeouts: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "turns": self.turns,
            "waited": self.waited,
            "mean_wait_ms": round(1000 * self.total_wait / self.turns, 3) if self.turns else 0.0,
            "max_wait_ms": round(1000 * self.max_wait, 3),
            "over_one_second": self.over_one_second,
            "timeouts": self.timeouts,
        }


class _FairLock:
    """A lock that hands itself to its waiters strictly in arrival order."""

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def held(self) -> bool:
        return self._held

    async def acquire(self, patience: float) -> bool:
        """Take the lock; False when it was free (no wait), True after a wait."""
        if not self._held and not self._waiters:
            self._held = True
            return False
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)

        def expire() -> None:
            if not turn.done():
                turn.set_exception(TimeoutError())

        timer = loop.call_later(patience, expire)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.release()  # handed over to us just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
            raise
        finally:
            timer.cancel()
        return True

    def release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the lock passes directly: it stays held
                return
        self._held = False


class WriterQueue:
    """The writers of one SQLite file in this process, one at a time, in arrival order."""

    def __init__(self, slow_wait: float = SLOW_WRITER_WAIT_SECONDS) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _FairLock] = (
            weakref.WeakKeyDictionary()
        )
        self.stats = WriterStats()
        self.slow_wait = slow_wait

    def _lock(self) -> _FairLock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = _FairLock()
        return lock

    async def acquire(self, patience: float = WRITER_WAIT_SECONDS) -> _FairLock:
        lock = self._lock()
        started = time.perf_counter()
        try:
            waited = await lock.acquire(patience)
        except TimeoutError:
            self.stats.timeouts += 1
            waited_for = time.perf_counter() - started
            log.error(SLOW_WRITER_WAIT_MESSAGE + "; gave up", waited_for, self.slow_wait)
            raise WriterTimeout(waited_for) from None
        wait = time.perf_counter() - started
        stats = self.stats
        stats.turns += 1
        if waited:
            stats.waited += 1
            stats.total_wait += wait
            stats.max_wait = max(stats.max_wait, wait)
            if wait > 1.0:
                stats.over_one_second += 1
            if wait > self.slow_wait:
                log.warning(SLOW_WRITER_WAIT_MESSAGE, wait, self.slow_wait)
        return lock


_WRITER_QUEUES: dict[str, WriterQueue] = {}


def writer_queue(database_url: str) -> WriterQueue:
    """The writer queue of a SQLite file: one per file per process, shared by its engines."""
    key = os.path.realpath(make_url(database_url).database or ":memory:")
    queue = _WRITER_QUEUES.get(key)
    if queue is None:
        queue = _WRITER_QUEUES[key] = WriterQueue()
    return queue


def _begin_immediate(conn: Connection) -> None:
    adapted = conn.connection.dbapi_connection
    if isinstance(adapted, _OneHopConnection):
        adapted.begin_with_next_statement("BEGIN IMMEDIATE")  # sent with the next statement
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _take_turn(info: dict[str, Any], queue: WriterQueue) -> None:
    """Wait for this connection's turn to write (from SQLAlchemy's greenlet)."""
    if info.get(_HOLDS_WRITER) is not None:
        return
    if not in_greenlet():
        return  # synchronous use (none in the service): SQLite's busy handler decides
    info[_HOLDS_WRITER] = await_(queue.acquire())


def _end_turn(info: dict[str, Any]) -> None:
    lock = info.pop(_HOLDS_WRITER, None)
    if lock is not None:
        lock.release()


def _configure_sqlite(engine: AsyncEngine, queue: WriterQueue) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        info = conn.info
        read_only = bool(conn.get_execution_options().get(READ_ONLY))
        info[_READ_MODE] = read_only
        if not read_only:
            _take_turn(info, queue)
            _begin_immediate(conn)

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before_execute(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        info = conn.info
        if (
            info.get(_READ_MODE)
            and info.get(_HOLDS_WRITER) is None
            and statement.lstrip()[:9].upper().startswith(_UPGRADE_PREFIXES)
        ):
            # A reader that writes after all: it takes its turn and begins a writer's
            # transaction now. What it read before, it read as committed then, as on
            # PostgreSQL (READ COMMITTED).
            _take_turn(info, queue)
            _begin_immediate(conn)

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # The turn lasts until the connection is back in the pool (after COMMIT or
        # ROLLBACK and the pool's reset), so a writer's next transaction cannot overtake.
        _end_turn(record.info)

    @event.listens_for(sync_engine, "close")
    def _on_close(_dbapi_connection: Any, record: Any) -> None:
        _end_turn(record.info)

    @event.listens_for(sync_engine, "invalidate")
    def _on_invalidate(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        _end_turn(record.info)


# -- SQLite through aiosqlite, one thread hop per statement -------------------------------
#
# aiosqlite runs each connection in a thread of its own, and SQLAlchemy's adapter crosses
# to it four times per statement (open a cursor, execute, fetch, close) plus once each for
# BEGIN, COMMIT and the pool's reset. Every crossing hands the GIL between the event loop
# and that thread; under load the handovers, not SQLite, were where a request's time went.
# This adapter crosses once per statement: the thread executes, fetches every row and
# closes the cursor in one go, and runs a pending BEGIN just before the transaction's
# first statement. COMMIT and ROLLBACK skip the crossing when no transaction is open.


def _run_statement(
    conn: sqlite3.Connection,
    begin: str | None,
    began: list[bool],
    operation: str,
    parameters: Any,
    many: bool,
) -> tuple[Any, int, int | None, list[Any] | None, bool]:
    """In the connection's thread: BEGIN if pending, the statement, all of its rows."""
    if begin is not None:
        conn.execute(begin)
        began.append(True)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows, conn.in_transaction
    finally:
        cursor.close()


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:  # no aiosqlite cursor: no crossing
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        return None

    async def _run(self, operation: Any, parameters: Any, many: bool) -> None:
        adapt = cast(_OneHopConnection, self._adapt_connection)
        async with adapt._execute_mutex:
            begin, adapt._begin = adapt._begin, None
            began: list[bool] = []
            try:
                result = await self._connection._execute(
                    _run_statement,
                    self._connection._conn,
                    begin,
                    began,
                    operation,
                    parameters,
                    many,
                )
            except BaseException:
                if began:
                    adapt._open = True
                raise
        self._description, self._rowcount, self._lastrowid, rows, adapt._open = result
        self._rows = deque(rows) if rows is not None else deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(operation, seq_of_parameters, True)


class _BeginFirstSSCursor(AsyncAdapt_aiosqlite_ss_cursor):
    """Server-side (streaming) cursors keep aiosqlite's cursor, after any pending BEGIN."""

    __slots__ = ()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        adapt = cast(_OneHopConnection, self._adapt_connection)
        begin, adapt._begin = adapt._begin, None
        if begin is not None:
            await self._connection.execute(begin)
            adapt._open = True
        return await super()._execute_async(operation, parameters)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_begin", "_open")
    _cursor_cls = _OneHopCursor
    _ss_cursor_cls = _BeginFirstSSCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None
        self._open = False

    def begin_with_next_statement(self, sql: str) -> None:
        self._begin = sql

    def _idle(self) -> bool:
        pending, self._begin = self._begin, None
        return pending is not None or not self._open

    def commit(self) -> None:
        if self._idle():
            return
        super().commit()
        self._open = False

    def rollback(self) -> None:
        if self._idle():
            return
        super().rollback()
        self._open = False


class _OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Any:
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True
        return _OneHopConnection(self, await_(connection))


_SQLITE_DBAPI: _OneHopDBAPI | None = None


def _sqlite_dbapi() -> _OneHopDBAPI:
    global _SQLITE_DBAPI
    if _SQLITE_DBAPI is None:
        import aiosqlite

        _SQLITE_DBAPI = _OneHopDBAPI(aiosqlite, sqlite3)
    return _SQLITE_DBAPI


def _is_write(statement: str) -> bool:
    return statement.lstrip()[:7].upper().startswith(_WRITE_PREFIXES)


def _track_writes(engine: AsyncEngine) -> None:
    """Mark the connection of a transaction that changed data (``transaction_wrote``)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.info[WROTE] = False

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before_execute(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if _is_write(statement):
            conn.info[WROTE] = True


def transaction_wrote(connection: Connection) -> bool:
    """Whether the connection's current transaction has changed any data."""
    return bool(connection.info.get(WROTE))


def holds_writer_turn(connection: Connection) -> bool:
    """Whether the connection holds this process's SQLite writer turn."""
    return connection.info.get(_HOLDS_WRITER) is not None


def sqlite_writer_stats(database_url: str) -> dict[str, float | int]:
    return writer_queue(database_url).stats.as_dict()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


_READ_ONLY_ENGINES: weakref.WeakKeyDictionary[Engine, AsyncEngine] = weakref.WeakKeyDictionary()


def read_only_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) whose transactions begin as readers (SQLite: DEFERRED)."""
    reader = _READ_ONLY_ENGINES.get(engine.sync_engine)
    if reader is None:
        reader = _READ_ONLY_ENGINES[engine.sync_engine] = engine.execution_options(
            **{READ_ONLY: True}
        )
    return reader


def open_session(
    sessions: async_sessionmaker[AsyncSession], *, read_only: bool = False
) -> AsyncSession:
    """A session from ``sessions``; ``read_only`` for work that only reads (and audits).

    A read-only session may still append audit events (``casemgr.audit``): they reach the
    database through the audit appender, not through this session's transaction.
    """
    if not read_only:
        return sessions()
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        return sessions()
    return sessions(bind=read_only_engine(bind))


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any exception."""
    async with sessions() as session, session.begin():
        yield session
