"""Benchmark 5: ``audit verify`` over a long chain (SPEC §8: >= 200,000 events/s).

The chain is written in large batches through the audit module's own chaining
(``casemgr.audit.services._append_sync``), so every event is one a request could have
left. Three figures from the same chain: ``verify_chain`` as the command runs it (rows
encoded by the database and read through the driver: on PostgreSQL two halves at once, the
next batch fetched while this one is hashed; on SQLite fetched and hashed by one thread);
the same walk through SQLAlchemy's ORM rows (the path it replaced); and hashing the events
alone, with nothing read (the ceiling).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from benchmarks.common import Scratch, spread

ACTIONS = ("student:read", "case:read", "roster:read", "student:update", "auth:login")


async def _fill(settings: Any, events: int, progress: Any) -> None:
    from casemgr.audit.services import Actor, _append_sync, _event_values
    from casemgr.db import create_engine

    engine = create_engine(settings.database_url)
    actors = [
        Actor(uuid.uuid4(), "class_teacher", uuid.uuid4(), client="127.0.0.1") for _ in range(50)
    ]
    students = [uuid.uuid4() for _ in range(500)]
    try:
        written = 0
        while written < events:
            batch = []
            for n in range(written, min(events, written + 10_000)):
                student = students[n % len(students)]
                batch.append(
                    _event_values(
                        ACTIONS[n % len(ACTIONS)],
                        actor=actors[n % len(actors)],
                        resource_type="student",
                        resource_id=student,
                        student_id=student,
                        detail={"status": 200} if n % 7 == 0 else None,
                    )
                )
            async with engine.begin() as conn:
                await conn.run_sync(_append_sync, batch)
            written += len(batch)
            progress(f"writing events {written}/{events}")
    finally:
        await engine.dispose()


async def _verify(settings: Any, keyring: Any, *, orm: bool) -> tuple[float, Any]:
    from unittest import mock

    from casemgr import audit
    from casemgr.audit import checkpoints
    from casemgr.db import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            started = time.perf_counter()
            if orm:
                with (
                    mock.patch.object(checkpoints, "_raw_batches", _no_raw),
                    mock.patch.object(checkpoints, "_sqlite_file", lambda _connection: None),
                ):
                    result = await audit.verify_chain(
                        session,
                        keyring.audit_public_keys,
                        settings.checkpoint_file,
                        seal_deadline=settings.seal_deadline,
                    )
            else:
                result = await audit.verify_chain(
                    session,
                    keyring.audit_public_keys,
                    settings.checkpoint_file,
                    seal_deadline=settings.seal_deadline,
                )
            return time.perf_counter() - started, result
    finally:
        await engine.dispose()


async def _no_raw(*_args: Any, **_kwargs: Any) -> None:
    return None


async def _hash_only(settings: Any) -> float:
    """Hash every event again from values already in memory: no database at all."""
    from sqlalchemy import select

    from casemgr.audit.chain import GENESIS_HASH, event_hash
    from casemgr.audit.checkpoints import _CHAIN_COLUMNS
    from casemgr.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            rows = [tuple(r[:14]) for r in await conn.execute(select(*_CHAIN_COLUMNS))]
    finally:
        await engine.dispose()
    prev = GENESIS_HASH
    started = time.perf_counter()
    for row in rows:
        prev = event_hash(prev, *row)
    return time.perf_counter() - started


def run_verify(scr: Scratch, *, events: int, runs: int, progress: Any) -> dict[str, Any]:
    from casemgr.crypto import KeyRing

    settings = scr.settings()
    keyring = KeyRing(settings.keys_dir)
    asyncio.run(_fill(settings, events, progress))
    fast, slow, hashing = [], [], []
    for run in range(runs):
        progress(f"verify {run + 1}/{runs}")
        seconds, result = asyncio.run(_verify(settings, keyring, orm=False))
        if not result.ok or result.checked != events:
            raise RuntimeError(f"verification failed: {result.as_dict()}")
        fast.append(events / seconds)
        progress(f"verify through the ORM {run + 1}/{runs}")
        seconds, result = asyncio.run(_verify(settings, keyring, orm=True))
        if not result.ok or result.checked != events:
            raise RuntimeError(f"verification through the ORM failed: {result.as_dict()}")
        slow.append(events / seconds)
        hashing.append(events / asyncio.run(_hash_only(settings)))
    figures = spread(fast, 0)
    return {
        "benchmark": "audit_verify",
        "backend": scr.backend,
        "events": events,
        "runs": runs,
        "events_per_s": figures["median"],
        "events_per_s_runs": figures,
        "orm_path_events_per_s": spread(slow, 0),
        "hash_only_events_per_s": spread(hashing, 0),
        "targets": {"events_per_s": ">= 200000"},
        "met": figures["median"] >= 200_000,
    }
