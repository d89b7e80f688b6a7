"""Concurrent writers leave a gap-free sequence and an intact chain (SPEC P4)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.db import transaction
from casemgr.settings import Settings
from tests.audit.helpers import events, verify

EVENTS_PER_WRITER = 10


class Abandon(Exception):
    """Raised inside a transaction to roll it back after it appended."""


def writers_for(db: Any) -> int:
    # 20 on PostgreSQL (the engine's pool holds exactly 20 connections); SQLite serialises
    # writers on its file lock, so a smaller crowd shows the same thing faster.
    return 20 if db.backend == "postgresql" else 5


def run_writers(db: Any, writers: int, abandon: Any) -> set[tuple[int, int]]:
    """``writers`` tasks, each with its own connection, append EVENTS_PER_WRITER events in
    separate transactions, all starting together. ``abandon(w, i)`` says which transactions
    roll back after appending. Returns the (writer, n) pairs that committed."""
    # On PostgreSQL every transaction is open before any appends, so all of them race for
    # the head lock at once. SQLite takes its write lock at BEGIN, so waiting inside a
    # transaction there would deadlock: its writers meet before they begin.
    meet_inside = db.backend == "postgresql"

    async def main(sessions: async_sessionmaker[AsyncSession]) -> set[tuple[int, int]]:
        barrier = asyncio.Barrier(writers)
        committed: set[tuple[int, int]] = set()

        async def writer(w: int) -> None:
            actor = audit.Actor(uuid.uuid4(), "class_teacher")
            if not meet_inside:
                await barrier.wait()
            for i in range(EVENTS_PER_WRITER):
                try:
                    async with transaction(sessions) as session:
                        if meet_inside and i == 0:
                            await session.execute(text("SELECT 1"))
                            await barrier.wait()
                        await audit.record(
                            session,
                            audit.Action.STUDENT_READ,
                            actor=actor,
                            resource_type="student",
                            detail={"w": w, "i": i},
                        )
                        if abandon(w, i):
                            # A second append in the same doomed transaction, for good measure.
                            await audit.record(
                                session,
                                audit.Action.ROSTER_READ,
                                actor=actor,
                                resource_type="class",
                                detail={"w": w, "i": i},
                            )
                            raise Abandon
                except Abandon:
                    continue
                committed.add((w, i))

        await asyncio.gather(*(writer(w) for w in range(writers)))
        return committed

    return db.run(main)


def _stored_pairs(db: Any) -> list[tuple[int, int]]:
    pairs = []
    for event in events(db):
        detail = msgspec.json.decode(event["detail"])
        pairs.append((detail["w"], detail["i"]))
    return pairs


def test_concurrent_writers_leave_a_gap_free_verified_chain(db: Any, settings: Settings) -> None:
    writers = writers_for(db)
    committed = run_writers(db, writers, abandon=lambda w, i: False)

    expected = writers * EVENTS_PER_WRITER
    assert len(committed) == expected
    assert [e["seq"] for e in events(db)] == list(range(1, expected + 1))
    assert sorted(_stored_pairs(db)) == sorted(committed)
    head = db.execute("SELECT last_seq FROM audit_head")[0][0]
    assert head == expected
    result = verify(db, settings)
    assert (result.ok, result.checked, result.first_bad_seq) == (True, expected, None)


def test_rolled_back_appends_consume_no_sequence_numbers(db: Any, settings: Settings) -> None:
    writers = writers_for(db)
    committed = run_writers(db, writers, abandon=lambda w, i: (w + i) % 3 == 0)

    expected = sum(1 for w in range(writers) for i in range(EVENTS_PER_WRITER) if (w + i) % 3)
    assert len(committed) == expected
    assert [e["seq"] for e in events(db)] == list(range(1, expected + 1))
    # Exactly the committed appends are stored; none of the abandoned ones survived.
    assert sorted(_stored_pairs(db)) == sorted(committed)
    assert all(e["action"] == "student:read" for e in events(db))
    assert db.execute("SELECT last_seq FROM audit_head")[0][0] == expected
    assert verify(db, settings).ok
