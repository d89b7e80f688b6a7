"""The deployment of ``deploy/compose.yaml``, with local processes (no container engine
here): PostgreSQL with the roles of ``deploy/postgres/roles.sql``, two ``casemgr serve``
processes on one database as its non-owning role, and a TLS-terminating reverse proxy in
front (``tests/deployment/proxy.py``, in the place of Caddy), listed in
``CASEMGR_TRUSTED_PROXIES``. Structured logs, metrics and their protection, health and
readiness, and a trail that two processes wrote and that still verifies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from casemgr.cli import main
from casemgr.crypto import create_key_ring
from tests.conftest import PG_ADMIN_URL, _pg_admin, _pg_dsn
from tests.deployment.proxy import TlsProxy, self_signed_certificate
from tests.factories import PASSWORD, student_payload

ROOT = Path(__file__).resolve().parents[2]
CASEMGR = Path(sys.executable).parent / "casemgr"
PROXY_ADDRESS = "127.0.0.2"  # the proxy's side of its upstream connections
CLIENT_ADDRESS = "127.0.0.3"  # where the test's browser and API clients come from
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
STARTUP_SECONDS = 90

pytestmark = pytest.mark.skipif(not PG_ADMIN_URL, reason="the deployment runs on PostgreSQL")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Deployment:
    owner_url: str
    app_url: str
    env: dict[str, str]
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]
    proxy: TlsProxy
    ca_file: Path
    metrics_token: str
    var: Path

    def through_proxy(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        transport = httpx.HTTPTransport(verify=context, local_address=CLIENT_ADDRESS)
        return httpx.Client(
            base_url=f"https://localhost:{self.proxy.port}", transport=transport, timeout=30
        )

    def direct(self, index: int) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.ports[index]}", timeout=30)

    def log_records(self, index: int) -> list[dict[str, Any]]:
        lines = self.logs[index].read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def psql(url: str, *args: str) -> None:
    subprocess.run(  # nosec B603: the test's own arguments
        ["psql", "-X", "-q", "-d", url, *args], check=True, capture_output=True
    )


def cli(env: dict[str, str], *args: str, input: str | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(main, list(args), env=env, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"casemgr serve exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"casemgr serve on {port} never became ready: {log.read_text()}")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    suffix = uuid.uuid4().hex[:10]
    owner, app, database = f"cm_owner_{suffix}", f"cm_app_{suffix}", f"casemgr_d_{suffix}"
    admin = _pg_dsn(PG_ADMIN_URL)
    psql(
        admin,
        "-v", f"owner={owner}", "-v", f"owner_password={secrets.token_hex(16)}",
        "-v", f"app={app}", "-v", f"app_password={secrets.token_hex(16)}",
        "-v", f"database={database}",
        "-f", str(ROOT / "deploy" / "postgres" / "roles.sql"),
    )  # fmt: skip
    base = make_url(admin)
    owner_url = base.set(username=owner, password=None, database=database).render_as_string(
        hide_password=False
    )
    app_url = base.set(username=app, password=None, database=database).render_as_string(
        hide_password=False
    )
    var = tmp_path / "var"
    keys = tmp_path / "keys"
    token_file = tmp_path / "metrics-token"
    metrics_token = secrets.token_hex(32)
    token_file.write_text(metrics_token + "\n")
    token_file.chmod(0o600)
    env = {
        "CASEMGR_KEYS_DIR": str(keys),
        "CASEMGR_VAR_DIR": str(var),
        "CASEMGR_AUDIT_CHECKPOINT_SECONDS": "0",  # one sealer: the checkpoint timer
        "CASEMGR_TRUSTED_PROXIES": PROXY_ADDRESS,
        "CASEMGR_LOG_FORMAT": "json",
        "CASEMGR_METRICS_ALLOW": "127.0.0.1/32",
        "CASEMGR_METRICS_TOKEN_FILE": str(token_file),
    }
    # As compose's one-shot "migrate" service: keys, then the schema, as the owner.
    create_key_ring(keys)
    cli({**env, "CASEMGR_DATABASE_URL": owner_url}, "init")
    env["CASEMGR_DATABASE_URL"] = app_url
    processes: list[subprocess.Popen[bytes]] = []
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"serve-{i}.log" for i in range(2)]
    cert_file, key_file = self_signed_certificate(tmp_path)
    proxy = TlsProxy([("127.0.0.1", port) for port in ports], cert_file, key_file)
    try:
        for port, log in zip(ports, logs, strict=True):
            with log.open("wb") as stderr:
                processes.append(
                    subprocess.Popen(  # nosec B603: our own command line
                        [str(CASEMGR), "serve", "--host", "127.0.0.1", "--port", str(port)],
                        env={**os.environ, **env},
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        cwd=tmp_path,
                    )
                )
        for process, port, log in zip(processes, ports, logs, strict=True):
            wait_ready(process, port, log)
        proxy.start()
        yield Deployment(
            owner_url, app_url, env, ports, processes, logs, proxy, cert_file,
            metrics_token, var,
        )  # fmt: skip
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            if process.poll() is None:
                process.kill()
                process.wait()
        with contextlib.suppress(RuntimeError):
            proxy.close()
        asyncio.run(
            _pg_admin(
                f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{app}"',
                f'DROP ROLE IF EXISTS "{owner}"',
            )
        )


def test_two_processes_behind_a_tls_proxy(deployment: Deployment) -> None:
    d = deployment
    env = {**d.env}
    school = cli(env, "school", "add", "--name", "测试学校", "--code", "T-1")["id"]
    school_class = cli(
        env, "class", "add", "--school-id", school, "--name", "七年级1班", "--grade", "7",
        "--school-year", "2026-2027",
    )["id"]  # fmt: skip
    cli(
        env, "user", "add", "--username", "ct.one", "--role", "class_teacher",
        "--school-id", school, "--class-id", school_class, "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip

    with d.through_proxy() as web:
        # Liveness and readiness through the proxy, as its health checks ask.
        assert web.get("/health").json() == {"status": "ok"}
        assert web.get("/ready").json() == {"status": "ready"}
        login = web.post("/api/v1/auth/login", json={"username": "ct.one", "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        # A token from one process is good at the other: nothing lives in a process.
        upstreams = set()
        student_ids = []
        answered = {login.headers["x-request-id"]}
        for n in range(4):
            created = web.post(
                "/api/v1/students",
                json=student_payload(uuid.UUID(school_class), n),
                headers=headers,
            )
            assert created.status_code == 201, created.text
            upstreams.add(created.headers["x-upstream"])
            student_ids.append(created.json()["id"])
            read = web.get(f"/api/v1/students/{student_ids[-1]}", headers=headers)
            assert read.status_code == 200 and read.json()["full_name"] == f"测试学生{n:03d}"
            upstreams.add(read.headers["x-upstream"])
            answered |= {created.headers["x-request-id"], read.headers["x-request-id"]}
        assert upstreams == {"0", "1"} and min(d.proxy.served) > 2
        # The proxy's X-Request-ID came back (the proxy is trusted), and HTTPS counts.
        assert read.headers["x-request-id"] == d.proxy.request_ids[-1]
        assert "strict-transport-security" in read.headers
        page = web.get("/")
        cookies = page.headers.get_list("set-cookie")
        assert cookies and all("__Host-" in c and "Secure" in c for c in cookies)
        # Metrics are not for the outside: the proxy's client is not in the allow list...
        refused = web.get("/metrics")
        assert refused.status_code == 403
        # ... unless it holds the metrics token.
        scraped = web.get("/metrics", headers={"Authorization": f"Bearer {d.metrics_token}"})
        assert scraped.status_code == 200
        assert web.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403

    # From the proxy's own host, directly: not trusted to forward, so forged headers
    # change nothing, and the allow list (127.0.0.1) lets the monitoring system in.
    with d.direct(0) as direct:
        forged = direct.get(
            "/health",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        )
        assert "strict-transport-security" not in forged.headers
        assert forged.headers["x-request-id"] not in d.proxy.request_ids
        failed = direct.post(
            "/api/v1/auth/login",
            json={"username": "ct.one", "password": "not the password"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        assert failed.status_code == 401
        metrics = direct.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
    assert 'casemgr_login_failures_total{channel="api",result="refused"} 1.0' in text
    assert re.search(
        r'casemgr_http_request_duration_seconds_count\{method="GET",'
        r'route="/api/v1/students/\{student_id\}",status="200"\} [1-9]',
        scraped.text + text,
    )
    # Process 0 answered the login (a write) and reads (group commit).
    assert re.search(r'casemgr_audit_append_duration_seconds_count\{path="inline"\} [1-9]', text)
    assert re.search(r'casemgr_audit_append_duration_seconds_count\{path="batch"\} [1-9]', text)
    assert "casemgr_db_pool_checked_out" in text
    for exposition in (text, scraped.text):
        assert not UUID.search(exposition), "no id in any metric"
        assert "测试学生" not in exposition and "ct.one" not in exposition

    # The audit trail names the real client behind the proxy, and the peer otherwise.
    clients = audit_clients(d.owner_url)
    assert clients["allow"] == {CLIENT_ADDRESS}
    assert clients["deny"] == {"127.0.0.1"}

    # Two processes appended to one chain; one sealer signs it, and it verifies.
    owner_env = {**env, "CASEMGR_DATABASE_URL": d.owner_url}
    cli(owner_env, "audit", "checkpoint")
    assert cli(owner_env, "audit", "verify")["ok"] is True

    # Both processes stop cleanly on SIGTERM (systemd, compose): uvicorn finishes the
    # shutdown (logged below), then ends by the signal it was sent (older releases exit 0).
    for process in d.processes:
        process.send_signal(signal.SIGTERM)
    for process in d.processes:
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)

    # Logs: one JSON object per line; requests by route template, never values.
    secrets_seen = [token, PASSWORD, "not the password", "测试学生", "测试路", d.metrics_token]
    logged_ids = set()
    routes = set()
    for index in range(2):
        records = d.log_records(index)
        raw = d.logs[index].read_text()
        for secret in secrets_seen:
            assert secret not in raw
        assert "203.0.113.9" not in raw and CLIENT_ADDRESS not in raw
        access = [r for r in records if r["logger"] == "casemgr.access"]
        assert access, records
        for record in access:
            assert {"ts", "level", "request_id", "method", "route", "status", "duration_ms"} <= set(
                record
            )
            assert not UUID.search(record["route"]) and "?" not in record["route"]
            assert not UUID.search(record["message"])
            logged_ids.add(record["request_id"])
            routes.add(record["route"])
        assert any(r["message"] == "Application shutdown complete." for r in records)
    # Each answer's request id (the proxy's) is in the log of the process that answered.
    assert answered <= logged_ids
    assert {"/api/v1/auth/login", "/api/v1/students", "/api/v1/students/{student_id}"} <= routes


def audit_clients(url: str) -> dict[str, set[str]]:
    async def body() -> dict[str, set[str]]:
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(
                "SELECT outcome, client_addr FROM audit_events WHERE action = 'auth:login'"
            )
        finally:
            await connection.close()
        found: dict[str, set[str]] = {"allow": set(), "deny": set()}
        for row in rows:
            found[row["outcome"]].add(row["client_addr"])
        return found

    return asyncio.run(body())
