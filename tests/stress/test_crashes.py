"""SIGKILL in the middle of things, then a restart: nothing is left half-written.

Each test drives a real process into a window (an import's transaction, a key rotation
between batches, an audit batch before its COMMIT, a checkpoint between its file line and
its database row), freezes it there (SIGSTOP), makes sure from outside that it is still
inside (``harness.kill_inside``) and kills it (SIGKILL). After a restart:

- imports are all or nothing: no result, student or data key of the killed import, and
  the same file imports whole afterwards;
- a key rotation resumes where its last committed batch stopped and finishes; reads
  succeed throughout, killed rotator or not;
- every request acknowledged before the kill has its audit event (per actor and action),
  requests the kill cut off have theirs at most once, and the chain is gap-free and
  verifies, checkpoints included.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from casemgr import clock
from casemgr.audit.anchors import read_anchor_file
from casemgr.audit.models import AuditCheckpoint
from casemgr.crypto.models import DataKey
from casemgr.screening.models import ScreeningResult
from tests.stress.checks import (
    assert_chain_whole,
    assert_events_of,
    audit_head,
    events_after,
    students_of,
)
from tests.stress.harness import (
    PROJECT_ROOT,
    Answer,
    Connection,
    Process,
    Server,
    Site,
    casemgr_cli,
    kill_inside,
    pg_dsn,
    pg_open_writes,
    serving,
    sqlite_write_locked,
)
from tests.stress.load import Ledger, reading_clients, run_clients
from tests.stress.world import World, phq9_csv, roster_csv

pytestmark = pytest.mark.stress


def acknowledged_reads(world: World, port: int, seconds: float = 1.0) -> Ledger:
    """A second of reads by everyone before anything is killed: all must be answered."""
    ledger = asyncio.run(
        run_clients(reading_clients(world), [port], seconds=seconds, ledger=Ledger())
    )
    assert ledger.outcomes and all(o.acknowledged for o in ledger.outcomes), ledger.statuses()
    return ledger


async def post(port: int, path: str, token: str, body: bytes) -> Answer:
    conn = Connection(port)
    try:
        return await conn.request("POST", path, token=token, body=body, content_type="text/csv")
    finally:
        await conn.close()


async def reading_until_killed(
    server: Server,
    world: World,
    ledger: Ledger,
    window: Callable[[], Awaitable[bool]],
    *,
    warm_up: int = 200,
) -> None:
    """Everyone reads, into ``ledger``, until ``server`` is killed inside ``window`` (looked
    for once ``warm_up`` answers are in)."""
    stop = asyncio.Event()
    readers = asyncio.create_task(
        run_clients(reading_clients(world), [server.port], seconds=120, ledger=ledger, stop=stop)
    )
    try:
        await ledger.reached(warm_up)
        await kill_inside(server, window)
    finally:
        stop.set()
        await readers


def window_of(site: Site, pg_pattern: str) -> Callable[[], Awaitable[bool]]:
    """A write transaction is open inside the step: on SQLite the write lock is held (the
    test makes sure nothing else writes meanwhile), on PostgreSQL a session whose latest
    statement matches ``pg_pattern`` has written and not ended."""

    async def sqlite_open() -> bool:
        return sqlite_write_locked(site.sqlite_path)

    async def pg_open() -> bool:
        return await pg_open_writes(site.pg_name or "", pg_pattern) > 0

    return sqlite_open if site.backend == "sqlite" else pg_open


def count(site: Site, statement) -> int:
    return int(site.query(statement)[0][0])


# -- imports ----------------------------------------------------------------------------------


def test_a_screening_import_killed_halfway_leaves_nothing(stress_site, tmp_path: Path):
    site, world = stress_site
    bulk = world.bulk
    path = f"/api/v1/screening/rounds/{bulk.round_id}/results"
    body = phq9_csv(bulk.numbers, clock.today().isoformat(), seed=11)
    results_of_round = (
        select(func.count())
        .select_from(ScreeningResult)
        .where(ScreeningResult.round_id == uuid.UUID(bulk.round_id))
    )
    server = Server(site, tmp_path / "server.log")
    with serving(server):
        before = audit_head(site)
        ledger = acknowledged_reads(world, server.port)
        head = audit_head(site)

        async def scenario() -> Answer:
            upload = asyncio.create_task(post(server.port, path, bulk.counselor.token, body))
            await kill_inside(server, window_of(site, "^INSERT INTO screening_results"))
            return await upload

        assert asyncio.run(scenario()).status == -1  # killed before it could answer

    assert count(site, results_of_round) == 0
    assert audit_head(site) == head  # the import's events went with it
    assert_events_of(site, ledger, before)
    again = Server(site, tmp_path / "again.log")
    with serving(again):
        answer = asyncio.run(post(again.port, path, bulk.counselor.token, body))
        assert answer.status == 200, answer.body
        assert answer.json()["imported"] == len(bulk.numbers)
        assert again.stop()
    assert count(site, results_of_round) == len(bulk.numbers)
    found = events_after(site, head)
    actor = bulk.counselor.id
    assert found == Counter({(actor, "screening_result:import"): len(bulk.numbers) + 1})
    assert_chain_whole(site)


ROSTER_ROWS = 3000


def test_a_roster_import_killed_halfway_leaves_nothing(stress_site, tmp_path: Path):
    site, world = stress_site
    bulk = world.bulk
    path = f"/api/v1/schools/{bulk.id}/students/import"
    body = roster_csv(bulk.class_names, [f"R{n:06d}" for n in range(ROSTER_ROWS)])
    keys = select(func.count()).select_from(DataKey)
    server = Server(site, tmp_path / "server.log")
    with serving(server):
        before = audit_head(site)
        ledger = acknowledged_reads(world, server.port)
        head, students, data_keys = audit_head(site), students_of(site, bulk.id), count(site, keys)

        async def scenario() -> Answer:
            upload = asyncio.create_task(post(server.port, path, bulk.leader.token, body))
            await kill_inside(server, window_of(site, "^INSERT INTO (students|data_keys)"))
            return await upload

        assert asyncio.run(scenario()).status == -1

    assert (students_of(site, bulk.id), count(site, keys)) == (students, data_keys)
    assert audit_head(site) == head
    assert_events_of(site, ledger, before)
    again = Server(site, tmp_path / "again.log")
    with serving(again):
        answer = asyncio.run(post(again.port, path, bulk.leader.token, body))
        assert answer.status == 200, answer.body
        assert answer.json()["created"] == ROSTER_ROWS
        assert again.stop()
    assert students_of(site, bulk.id) == students + ROSTER_ROWS
    actor = bulk.leader.id
    assert events_after(site, head) == Counter(
        {(actor, "student:create"): ROSTER_ROWS, (actor, "student:import"): 1}
    )
    assert_chain_whole(site)


# -- key rotation -----------------------------------------------------------------------------


def rotation_state(site: Site) -> tuple[int, bool] | None:
    """(keys rewrapped, finished) of the KEK rotation, read without waiting for a lock."""
    if site.backend == "sqlite":
        conn = sqlite3.connect(site.sqlite_path, timeout=5)
        try:
            row = conn.execute(
                "SELECT rewrapped, finished_at IS NOT NULL FROM key_rotations WHERE kind = 'kek'"
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else (int(row[0]), bool(row[1]))

    async def read() -> tuple[int, bool] | None:
        conn = await asyncpg.connect(pg_dsn(site.pg_name))
        try:
            row = await conn.fetchrow(
                "SELECT rewrapped, finished_at IS NOT NULL AS done FROM key_rotations"
                " WHERE kind = 'kek'"
            )
        finally:
            await conn.close()
        return None if row is None else (int(row["rewrapped"]), bool(row["done"]))

    return asyncio.run(read())


def test_a_key_rotation_killed_halfway_resumes_while_reads_go_on(stress_site, tmp_path: Path):
    site, world = stress_site
    wrapped = select(func.count()).select_from(DataKey).where(DataKey.wrapped.is_not(None))
    total = count(site, wrapped)
    server = Server(site, tmp_path / "server.log")
    ledger = Ledger()

    async def halfway() -> bool:
        state = await asyncio.to_thread(rotation_state, site)
        return state is not None and state[0] > 0 and not state[1]

    async def scenario(rotator: Process) -> None:
        stop = asyncio.Event()
        readers = asyncio.create_task(
            run_clients(
                reading_clients(world), [server.port], seconds=120, ledger=ledger, stop=stop
            )
        )
        try:
            await kill_inside(rotator, halfway)
            killed_at = await asyncio.to_thread(rotation_state, site)
            assert killed_at is not None and 0 < killed_at[0] < total, killed_at
            # Reads go on with keys under both versions; then the rotation resumes.
            resumed = await asyncio.to_thread(casemgr_cli, site, "keys", "rotate")
            assert resumed["resumed"] is True
            assert resumed["rewrapped"] == total
            assert resumed["kek_version"] == 2
        finally:
            stop.set()
            await readers

    with serving(server):
        before = audit_head(site)
        rotator = Process(
            subprocess.Popen(
                [sys.executable, "-m", "casemgr", "keys", "rotate", "--batch-size", "20"],
                cwd=PROJECT_ROOT,
                env=site.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        try:
            asyncio.run(scenario(rotator))
        finally:
            if rotator.alive():
                rotator.kill()
        status = casemgr_cli(site, "keys", "status")
        assert status["keys_by_version"] == {"2": total}
        assert status["rotation_in_progress"] is None
        assert server.stop()

    assert ledger.outcomes and all(o.acknowledged for o in ledger.outcomes), ledger.statuses()
    found = events_after(site, before)
    rotation = ("None", "keys:rotate")
    assert found[rotation] == 1
    assert found - Counter({rotation: 1}) == ledger.expected_events()
    assert_chain_whole(site)


# -- audit group commit -----------------------------------------------------------------------


def test_a_kill_during_an_audit_batch_loses_no_acknowledged_event(
    stress_site, tmp_path: Path
) -> None:
    site, world = stress_site
    server = Server(site, tmp_path / "server.log")
    ledger = Ledger()
    with serving(server):
        before = audit_head(site)
        # Only the audit appender writes here: reads hand their events to it.
        window = window_of(site, "audit_|auth_tokens")
        asyncio.run(reading_until_killed(server, world, ledger, window))

    cut_off = [o for o in ledger.outcomes if not o.acknowledged]
    assert cut_off, "the kill cut off no request: it did not land in a batch"
    assert {o.status for o in cut_off} == {-1}
    with serving(Server(site, tmp_path / "again.log")) as (again,):
        assert again.stop()
    assert_events_of(site, ledger, before)
    assert_chain_whole(site)


# -- audit checkpoint -------------------------------------------------------------------------


def test_a_checkpoint_killed_between_file_and_database_is_repaired_at_start(
    stress_site, tmp_path: Path
) -> None:
    site, world = stress_site
    marker = tmp_path / "checkpoint-line-written"
    paused = Server(
        site,
        tmp_path / "paused.log",
        command=[sys.executable, "-m", "tests.stress.pause_checkpoint"],
        CASEMGR_AUDIT_CHECKPOINT_SECONDS="1",
        STRESS_CHECKPOINT_MARKER=str(marker),
    )
    rows = select(func.count()).select_from(AuditCheckpoint)
    ledger = Ledger()
    with serving(paused):
        before = audit_head(site)

        async def line_written() -> bool:
            return marker.exists()

        # The paused checkpoint stops the whole process: no warm-up to wait for.
        asyncio.run(reading_until_killed(paused, world, ledger, line_written, warm_up=0))

    assert ledger.acknowledged(), "no request was answered before the checkpoint"
    filed = len(read_anchor_file(site.checkpoint_file).checkpoints)
    assert count(site, rows) == filed - 1  # the crash left the file one checkpoint ahead
    damaged = site.verify()  # which verification reports as the two copies at odds
    assert not damaged.ok and "in the checkpoint file but not in the database" in str(
        damaged.reason
    )
    # A restarted service (sealing every five minutes, the default) repairs it at once.
    restarted = Server(site, tmp_path / "restarted.log", CASEMGR_AUDIT_CHECKPOINT_SECONDS="300")
    with serving(restarted):
        deadline = time.monotonic() + 30
        while count(site, rows) < filed and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the repair, not a synchronisation guess
        assert count(site, rows) >= filed, restarted.log_text()[-2000:]
        assert site.verify().ok
        assert restarted.stop()
    assert re.search("restored the interrupted audit checkpoint", restarted.log_text())
    assert_events_of(site, ledger, before)
    assert_chain_whole(site)
