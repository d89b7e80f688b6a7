"""PostgreSQL restarted under load: the service rides it out without a restart of its own.

Two ``casemgr serve`` processes carry the mixed load of sixteen people; meanwhile the
cluster is restarted (``pg_ctlcluster ... restart``: open connections are terminated, new
ones refused, then "starting up"). While it is down:

- requests answer 503 with Retry-After (problem+json), never 500, and the processes keep
  answering: no connection to them fails;
- ``/health`` (liveness) answers 200 throughout; ``/ready`` answers 503;

and once it is back, without any restart of the service processes (the same PIDs):

- ``/ready`` answers 200 again, and every request sent after that succeeds;
- every acknowledged write is stored, each acknowledged access has its audit event (a
  request that failed has its own at most once), and the chain is gap-free and verifies.

This restarts the whole cluster, which breaks the tests of anyone else using it at that
moment: it runs only under ``make test-stress``, alone.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.stress.checks import (
    assert_acknowledged_writes_stored,
    assert_chain_whole,
    assert_events_of,
    audit_head,
    students_of,
)
from tests.stress.harness import PG_ADMIN_URL, Connection, Server, report, serving
from tests.stress.load import Ledger, mixed_clients, run_clients

pytestmark = pytest.mark.stress
PROBE_INTERVAL = 0.05  # seconds between /health and /ready probes
# Bounds that only catch a hang: a restart takes a second or two here.
RESTART_SECONDS = 120
RECOVERY_SECONDS = 60


def postgres_cluster() -> list[str]:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if p.name.isdigit())
    return [versions[-1] if versions else "15", "main"]


def pg_isready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0


def restart_postgres() -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *postgres_cluster(), "restart"],
        check=True,
        timeout=RESTART_SECONDS,
        capture_output=True,
    )


@pytest.fixture
def postgres_left_running() -> Iterator[None]:
    """The cluster of this machine that the tests use; up again when the test ends."""
    host = make_url(PG_ADMIN_URL).host or "localhost"
    if host not in ("127.0.0.1", "localhost", "::1") or shutil.which("pg_ctlcluster") is None:
        pytest.skip("restarting PostgreSQL needs the local cluster and pg_ctlcluster")
    yield
    if not pg_isready():
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", *postgres_cluster(), "start"],
            check=False,
            timeout=RESTART_SECONDS,
        )
    deadline = time.monotonic() + RESTART_SECONDS
    while not pg_isready() and time.monotonic() < deadline:
        time.sleep(0.2)  # waiting for start-up
    assert pg_isready(), "PostgreSQL did not come back"


@dataclass
class Probes:
    """(time, server, path, status, Retry-After) of every liveness and readiness probe."""

    seen: list[tuple[float, int, str, int, str | None]] = field(default_factory=list)

    async def run(self, ports: list[int], stop: asyncio.Event) -> None:
        conns = {port: Connection(port) for port in ports}
        try:
            while not stop.is_set():
                for port, conn in conns.items():
                    for path in ("/health", "/ready"):
                        answer = await conn.request("GET", path)
                        self.seen.append(
                            (
                                time.monotonic(),
                                port,
                                path,
                                answer.status,
                                answer.headers.get("retry-after"),
                            )
                        )
                await asyncio.sleep(PROBE_INTERVAL)
        finally:
            for conn in conns.values():
                await conn.close()

    def ready(self, port: int) -> bool:
        for _, p, path, status, _ in reversed(self.seen):
            if p == port and path == "/ready":
                return status == 200
        return False


@pytest.mark.parametrize("stress_backend", ["postgresql"])
def test_the_service_rides_out_a_database_restart(
    stress_site, postgres_left_running: None, tmp_path: Path
) -> None:
    site, world = stress_site
    head_before = audit_head(site)
    students_before = {school.id: students_of(site, school.id) for school in world.schools}
    servers = [
        Server(site, tmp_path / f"server{n}.log", CASEMGR_AUDIT_CHECKPOINT_SECONDS="3")
        for n in range(2)
    ]
    ledger, probes = Ledger(), Probes()
    marks: dict[str, float] = {}

    async def scenario(ports: list[int]) -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(
            run_clients(mixed_clients(world), ports, seconds=600, ledger=ledger, stop=stop)
        )
        watch = asyncio.create_task(probes.run(ports, stop))
        try:
            await ledger.reached(300)  # the load is in full swing
            marks["restart"] = time.monotonic()
            await asyncio.to_thread(restart_postgres)
            marks["restarted"] = time.monotonic()
            deadline = time.monotonic() + RECOVERY_SECONDS
            while not all(probes.ready(port) for port in ports):
                assert time.monotonic() < deadline, "the service did not become ready again"
                await asyncio.sleep(PROBE_INTERVAL)
            marks["ready"] = time.monotonic()
            await ledger.reached(len(ledger.outcomes) + 600)  # and it serves on
        finally:
            stop.set()
            await load
            await watch

    with serving(*servers):
        pids = [server.pid for server in servers]
        asyncio.run(scenario([server.port for server in servers]))
        assert [server.pid for server in servers if server.alive()] == pids
        for server in servers:
            assert server.stop(), server.log_text()[-3000:]

    statuses = ledger.statuses()
    logs = "".join(server.log_text() for server in servers)
    assert set(statuses) <= {200, 201, 503}, (statuses, logs[-3000:])
    unavailable = [o for o in ledger.outcomes if o.status == 503]
    assert unavailable, "no request met the restart: the test did not test it"
    assert all(o.retry_after and o.content_type == "application/problem+json" for o in unavailable)
    assert all(o.acknowledged for o in ledger.outcomes if o.started > marks["ready"])
    health = [p for p in probes.seen if p[2] == "/health"]
    assert health and all(p[3] == 200 for p in health)
    ready = [p for p in probes.seen if p[2] == "/ready"]
    assert {p[3] for p in ready} == {200, 503}
    assert all(p[4] for p in ready if p[3] == 503)
    assert "unhandled" not in logs, logs[-3000:]

    stored = assert_acknowledged_writes_stored(site, ledger, students_before)
    assert_events_of(site, ledger, head_before)
    length = assert_chain_whole(site)
    report(
        "database_restart",
        {
            **ledger.summary(),
            "restart_seconds": round(marks["restarted"] - marks["restart"], 2),
            "ready_again_after_seconds": round(marks["ready"] - marks["restart"], 2),
            "ready_503": sum(1 for p in ready if p[3] == 503),
            "stored": stored,
            "chain_length": length,
        },
    )
