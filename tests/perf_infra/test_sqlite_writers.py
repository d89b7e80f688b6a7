"""SQLite's writer queue: one writer at a time, first come first served, readers never
wait, and no deadlock (``casemgr.db``). Functional checks only: no timings asserted."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.db import WriterTimeout, _FairLock, open_session, writer_queue
from casemgr.schools.models import School


def test_the_lock_is_handed_over_in_arrival_order() -> None:
    async def main() -> list[int]:
        lock = _FairLock()
        order: list[int] = []
        await lock.acquire(5)

        async def waiter(n: int) -> None:
            await lock.acquire(5)
            order.append(n)
            await asyncio.sleep(0)
            lock.release()

        tasks = []
        for n in range(20):
            tasks.append(asyncio.create_task(waiter(n)))
            await asyncio.sleep(0)  # each one queues before the next arrives
        lock.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == list(range(20))


def test_a_cancelled_or_timed_out_waiter_passes_its_turn_on() -> None:
    async def main() -> bool:
        lock = _FairLock()
        await lock.acquire(5)
        cancelled = asyncio.create_task(lock.acquire(5))
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            await lock.acquire(0.01)
        patient = asyncio.create_task(lock.acquire(5))
        await asyncio.sleep(0)
        cancelled.cancel()
        lock.release()
        await patient  # gets the lock although two waiters before it gave up
        lock.release()
        return lock.held

    assert asyncio.run(main()) is False


@pytest.fixture
def sqlite_db(db: Any) -> Any:
    if db.backend != "sqlite":
        pytest.skip("the writer queue is SQLite's")
    return db


def test_many_writers_and_readers_finish_and_all_writes_land(sqlite_db: Any) -> None:
    writers, readers = 30, 30

    async def write(sessions: async_sessionmaker[AsyncSession], n: int) -> None:
        async with sessions() as session, session.begin():
            await session.execute(select(School.id).limit(1))  # read, then write: no upgrade
            await session.execute(
                insert(School).values(id=uuid.uuid4(), name=f"School {n}", code=f"W{n:03d}")
            )

    async def read(sessions: async_sessionmaker[AsyncSession]) -> int:
        session = open_session(sessions, read_only=True)
        try:
            return len((await session.execute(select(School.id))).all())
        finally:
            await session.close()

    async def main(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        results = await asyncio.gather(
            *(write(sessions, n) for n in range(writers)),
            *(read(sessions) for _ in range(readers)),
        )
        return writer_queue(sqlite_db.settings.database_url).stats.as_dict() | {
            "read": results[writers:]
        }

    stats = sqlite_db.run(main)
    assert sqlite_db.execute("SELECT count(*) FROM schools") == [(writers,)]
    assert stats["timeouts"] == 0
    assert all(0 <= n <= writers for n in stats["read"])


def test_a_reader_that_writes_takes_its_turn_and_writes(sqlite_db: Any) -> None:
    """A read-only session that writes after reading: no stale snapshot, no lost write."""

    async def reader_that_writes(sessions: async_sessionmaker[AsyncSession], n: int) -> None:
        session = open_session(sessions, read_only=True)
        try:
            await session.execute(select(School.id))
            await asyncio.sleep(0)  # let other writers commit in between
            await session.execute(
                insert(School).values(id=uuid.uuid4(), name=f"School {n}", code=f"R{n:03d}")
            )
            await session.commit()
        finally:
            await session.close()

    async def main(sessions: async_sessionmaker[AsyncSession]) -> None:
        await asyncio.gather(*(reader_that_writes(sessions, n) for n in range(20)))

    sqlite_db.run(main)
    assert sqlite_db.execute("SELECT count(*) FROM schools") == [(20,)]


def test_a_writer_waits_no_longer_than_its_patience(sqlite_db: Any) -> None:
    async def main(sessions: async_sessionmaker[AsyncSession]) -> type[BaseException]:
        queue = writer_queue(sqlite_db.settings.database_url)
        async with sessions() as holder, holder.begin():
            await holder.execute(text("SELECT 1"))  # holds this process's writer turn
            try:
                await queue.acquire(0.05)
            except WriterTimeout as exc:
                return type(exc)
        return type(None)

    assert sqlite_db.run(main) is WriterTimeout
