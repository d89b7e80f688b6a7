"""Sixteen people at once for ``CASEMGR_STRESS_SECONDS`` (60 by default; CI runs 25).

PostgreSQL: two ``casemgr serve`` processes on one database, the clients spread over
both, each process sealing the chain every three seconds meanwhile. SQLite: one process.
Afterwards:

- no answer was a 5xx (nor any other failure: the mix is made of requests that succeed);
- every acknowledged write is stored: each support log and home visit by its id, each
  imported student (the count per school), each result's last review (opened with the
  student's key);
- the trail holds exactly one trace per access: per actor and action, the events since
  the run began are those the acknowledged requests must leave (``load.EVENTS`` per kind;
  an import leaves one per student and one for the file) and nothing else;
- the chain is gap-free and verifies, checkpoints included;
- SQLite: no writer waited more than a second for the write lock (the service logs
  every such wait, ``casemgr.db.SLOW_WRITER_WAIT_MESSAGE``; none may appear).

Why a shorter run in CI still shows the same: every kind of request runs from the first
second on (hundreds of each in 25 s), checkpoints come every 3 s, imports every half
second per school, and the pool and the writer queue reach their steady state within a
second or two; a longer run adds more of the same interleavings, not new ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from casemgr.db import SLOW_WRITER_WAIT_MESSAGE
from tests.stress.checks import (
    assert_acknowledged_writes_stored,
    assert_chain_whole,
    assert_one_event_per_access,
    audit_head,
    students_of,
)
from tests.stress.conftest import LOAD_SECONDS
from tests.stress.harness import Server, report, serving
from tests.stress.load import Ledger, mixed_clients, run_clients

pytestmark = pytest.mark.stress
SLOW_WAIT = SLOW_WRITER_WAIT_MESSAGE.split(":", 1)[0]


def test_mixed_load(stress_site, stress_backend: str, tmp_path: Path) -> None:
    site, world = stress_site
    processes = 2 if stress_backend == "postgresql" else 1
    head_before = audit_head(site)
    students_before = {school.id: students_of(site, school.id) for school in world.schools}
    servers = [
        Server(site, tmp_path / f"server{n}.log", CASEMGR_AUDIT_CHECKPOINT_SECONDS="3")
        for n in range(processes)
    ]
    ledger = Ledger()
    with serving(*servers):
        asyncio.run(
            run_clients(
                mixed_clients(world),
                [server.port for server in servers],
                seconds=LOAD_SECONDS,
                ledger=ledger,
            )
        )
        for server in servers:
            assert server.stop(), server.log_text()[-3000:]

    summary = ledger.summary()
    logs = "".join(server.log_text() for server in servers)
    failed = {k: v for k, v in ledger.statuses().items() if not 200 <= k < 300}
    assert not failed, (failed, summary)
    stored = assert_acknowledged_writes_stored(site, ledger, students_before)
    events = assert_one_event_per_access(site, ledger, head_before)
    length = assert_chain_whole(site)
    assert "unhandled" not in logs, logs[-3000:]
    if stress_backend == "sqlite":
        slow = [line for line in logs.splitlines() if SLOW_WAIT in line]
        assert not slow, slow[:10]
    report(
        f"mixed_load_{stress_backend}",
        {
            "processes": processes,
            "seconds": LOAD_SECONDS,
            **summary,
            "stored": stored,
            "audit_events": events,
            "chain_length": length,
            "rps": round(len(ledger.outcomes) / LOAD_SECONDS, 1),
        },
    )
