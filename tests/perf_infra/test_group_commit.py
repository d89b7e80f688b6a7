"""Audit group commit: requests' events written in batches, each request's commit waiting
for its batch (SPEC P4). Functional checks only; speed is measured by ``make bench``."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.db import open_session
from casemgr.schools.models import School
from tests.audit.helpers import events, verify

ACTOR = audit.Actor(uuid.uuid4(), "class_teacher")


def _deferred(
    sessions: async_sessionmaker[AsyncSession], *, read_only: bool = True
) -> AsyncSession:
    session = open_session(sessions, read_only=read_only)
    bind = sessions.kw["bind"]
    audit.defer_events(session, audit.appender_for(bind))
    return session


async def _read_request(sessions: async_sessionmaker[AsyncSession], n: int, action: str) -> None:
    """What a GET request does: read, record, commit (the commit writes the event)."""
    session = _deferred(sessions)
    try:
        await session.execute(select(School.id).limit(1))
        seq = await audit.record(
            session, action, actor=ACTOR, resource_type="student", detail={"n": n}
        )
        assert seq is None  # deferred: the sequence number is known only after the batch
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()
    # As the request's session dependency does: after the connection went back.
    await audit.write_handed_over(session)


def test_concurrent_reads_leave_a_gap_free_verified_chain(db: Any, settings: Any) -> None:
    requests = 40

    async def main(sessions: async_sessionmaker[AsyncSession]) -> int:
        await asyncio.gather(
            *(_read_request(sessions, n, audit.Action.STUDENT_READ) for n in range(requests))
        )
        return audit.appender_for(sessions.kw["bind"]).stats.batches

    batches = db.run(main)
    stored = events(db)
    assert [e["seq"] for e in stored] == list(range(1, requests + 1))
    assert sorted(int(e["detail"][5:-1]) for e in stored) == list(range(requests))
    assert 1 <= batches <= requests
    assert verify(db, settings).ok


def test_a_failed_batch_fails_every_request_in_it_and_writes_nothing(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> bytes:
        raise RuntimeError("audit hashing unavailable")

    monkeypatch.setattr("casemgr.audit.services.event_hash", broken)

    async def main(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
        return await asyncio.gather(
            *(_read_request(sessions, n, audit.Action.STUDENT_READ) for n in range(10)),
            return_exceptions=True,
        )

    outcomes = db.run(main)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert events(db) == []
    assert db.execute("SELECT last_seq FROM audit_head") == [(0,)]


def test_one_bad_event_fails_only_its_own_request(
    db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from casemgr.audit import services

    real = services.event_hash

    def picky(prev: bytes, **values: Any) -> bytes:
        if values["action"] == "case:read":
            raise RuntimeError("this event cannot be written")
        return real(prev, **values)

    monkeypatch.setattr("casemgr.audit.services.event_hash", picky)

    async def main(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
        return await asyncio.gather(
            *(
                _read_request(
                    sessions, n, audit.Action.CASE_READ if n == 3 else audit.Action.STUDENT_READ
                )
                for n in range(12)
            ),
            return_exceptions=True,
        )

    outcomes = db.run(main)
    assert isinstance(outcomes[3], RuntimeError)
    assert [o for n, o in enumerate(outcomes) if n != 3] == [None] * 11
    stored = events(db)
    assert len(stored) == 11 and all(e["action"] == "student:read" for e in stored)
    monkeypatch.setattr("casemgr.audit.services.event_hash", real)
    assert verify(db, settings).ok


def test_a_request_that_writes_commits_its_events_with_its_data(db: Any) -> None:
    """Changed data and its events commit in one transaction, or neither does."""

    async def write(sessions: async_sessionmaker[AsyncSession], code: str, fail: bool) -> None:
        session = _deferred(sessions, read_only=False)
        try:
            await session.execute(
                insert(School).values(id=uuid.uuid4(), name=f"School {code}", code=code)
            )
            await audit.record(
                session, audit.Action.SCHOOL_CREATE, actor=ACTOR, resource_type="school"
            )
            if fail:
                raise RuntimeError("the request fails after recording")
            await session.commit()
            await audit.write_handed_over(session)
        except RuntimeError:
            await session.rollback()
        finally:
            await session.close()

    async def main(sessions: async_sessionmaker[AsyncSession]) -> None:
        await write(sessions, "KEEP", fail=False)
        await write(sessions, "DROP", fail=True)

    db.run(main)
    assert db.execute("SELECT code FROM schools") == [("KEEP",)]
    assert [e["action"] for e in events(db)] == ["school:create"]


def test_a_writing_request_fails_when_its_events_cannot_be_written(db: Any) -> None:
    if db.backend == "sqlite":
        db.execute(
            "CREATE TRIGGER audit_events_unwritable BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END"
        )
    else:
        db.execute(
            "CREATE FUNCTION test_audit_unwritable() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit storage unavailable'; END; $$ LANGUAGE plpgsql"
        )
        db.execute(
            "CREATE TRIGGER audit_events_unwritable BEFORE INSERT ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION test_audit_unwritable()"
        )

    async def main(sessions: async_sessionmaker[AsyncSession]) -> str:
        session = _deferred(sessions, read_only=False)
        try:
            await session.execute(insert(School).values(id=uuid.uuid4(), name="School X", code="X"))
            await audit.record(
                session, audit.Action.SCHOOL_CREATE, actor=ACTOR, resource_type="school"
            )
            try:
                await session.commit()
                await audit.write_handed_over(session)
            except Exception as exc:
                await session.rollback()
                return type(exc).__name__
            return "committed"
        finally:
            await session.close()

    assert db.run(main) != "committed"
    assert db.execute("SELECT count(*) FROM schools") == [(0,)]


def test_a_denial_is_durable_when_record_denial_returns(db: Any) -> None:
    async def main(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
        session = _deferred(sessions)
        try:
            await session.execute(text("SELECT 1"))
            await audit.record(
                session, audit.Action.STUDENT_READ, actor=ACTOR, resource_type="student"
            )
            await audit.record_denial(
                session, audit.Action.STUDENT_READ, actor=ACTOR, resource_type="student"
            )
            # Seen from another connection before this session does anything else.
            async with sessions() as other:
                rows = await other.execute(text("SELECT action, outcome FROM audit_events"))
                return list(rows.all())
        finally:
            await session.close()

    # The refused request's earlier event went with its rolled-back work; the denial stays.
    assert db.run(main) == [("student:read", "deny")]
