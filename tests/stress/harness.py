"""What the stress tests run on: real ``casemgr serve`` processes, a lean HTTP client, the
databases they share, and probes that tell when a process is inside a window worth
killing it in.

Nothing here reaches into a server: its requests go over loopback, its database is read
from outside, and it is stopped, frozen or killed by signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.crypto import KeyRing
from casemgr.db import create_engine, create_sessionmaker
from casemgr.settings import Settings, normalise_database_url

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("CASEMGR_TEST_PG_URL", "")
# How long a server may take to start, a request to answer, a process to exit: bounds that
# only catch a hang (a healthy run needs a small fraction of each), never timings.
START_SECONDS = 60.0
REQUEST_SECONDS = 60.0
EXIT_SECONDS = 60.0
ARTIFACTS = PROJECT_ROOT / "var" / "test-artifacts" / "stress"


def report(name: str, document: dict[str, Any]) -> None:
    """Keep a run's figures (requests, statuses, latencies) where people can read them."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    print(name, json.dumps(document))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_dsn(database: str | None = None) -> str:
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


async def pg_admin(*statements: str) -> None:
    conn = await asyncpg.connect(pg_dsn())
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


# -- a database and the files that go with it -------------------------------------------


@dataclass
class Site:
    """One installation: a database, its key ring and its var directory (checkpoints)."""

    backend: str
    root: Path
    url: str  # as an operator writes it (sqlite:///..., postgresql://...)
    pg_name: str | None = None

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def var_dir(self) -> Path:
        return self.root / "var"

    @property
    def checkpoint_file(self) -> Path:
        return self.var_dir / "audit-checkpoints.jsonl"

    @property
    def sqlite_path(self) -> Path:
        assert self.backend == "sqlite"
        return Path(make_url(self.url).database or "")

    @property
    def database_url(self) -> str:
        return normalise_database_url(self.url)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "keys_dir": self.keys_dir,
            "var_dir": self.var_dir,
            "checkpoint_file": self.checkpoint_file,
            "checkpoint_interval_seconds": 0,
            **overrides,
        }
        return Settings(**values)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CASEMGR_DATABASE_URL": self.url,
            "CASEMGR_KEYS_DIR": str(self.keys_dir),
            "CASEMGR_VAR_DIR": str(self.var_dir),
            "CASEMGR_AUDIT_CHECKPOINT_FILE": str(self.checkpoint_file),
            "CASEMGR_AUDIT_CHECKPOINT_SECONDS": "0",
            # Tokens were issued when the world was seeded, maybe minutes before.
            "CASEMGR_TOKEN_IDLE_SECONDS": "86400",
            **extra,
        }

    def copy(self, root: Path) -> Site:
        """A copy of this installation under ``root`` (no process may be using it)."""
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.keys_dir, root / "keys")
        shutil.copytree(self.var_dir, root / "var")
        if self.backend == "sqlite":
            target = root / "casemgr.db"
            for suffix in ("", "-wal"):
                source = Path(str(self.sqlite_path) + suffix)
                if source.exists():
                    shutil.copyfile(source, str(target) + suffix)
            return Site("sqlite", root, f"sqlite:///{target}")
        name = f"casemgr_stress_{uuid.uuid4().hex[:12]}"
        asyncio.run(pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_name}"'))
        return Site("postgresql", root, pg_dsn(name), name)

    def drop(self) -> None:
        if self.pg_name is not None:
            asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))

    # -- reading it from outside ---------------------------------------------------------

    def run(self, body: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
        async def main() -> T:
            engine = create_engine(self.database_url, pool_size=2, max_overflow=2)
            try:
                return await body(create_sessionmaker(engine))
            finally:
                await engine.dispose()

        return asyncio.run(main())

    def query(self, statement: Any) -> list[Any]:
        async def body(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
            async with sessions() as session:
                return list((await session.execute(statement)).all())

        return self.run(body)

    def verify(self) -> audit.VerifyResult:
        """``casemgr audit verify`` against the key ring's public keys and the file."""
        keyring = KeyRing(self.keys_dir)
        settings = self.settings()

        async def body(sessions: async_sessionmaker[AsyncSession]) -> audit.VerifyResult:
            async with sessions() as session:
                return await audit.verify_chain(
                    session,
                    keyring.audit_public_keys,
                    self.checkpoint_file,
                    seal_deadline=settings.seal_deadline,
                )

        return self.run(body)


def casemgr_cli(site: Site, *args: str, **env: str) -> dict[str, Any]:
    """Run one ``casemgr`` command to its end; its last stdout line, parsed."""
    result = subprocess.run(
        [sys.executable, "-m", "casemgr", *args],
        cwd=PROJECT_ROOT,
        env=site.env(**env),
        capture_output=True,
        text=True,
        timeout=EXIT_SECONDS * 5,
        check=False,
    )
    assert result.returncode == 0, f"casemgr {' '.join(args)}: {result.stderr[-3000:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


# -- service processes ----------------------------------------------------------------------


class Process:
    """A process of ours that a test may freeze (SIGSTOP), thaw and kill (SIGKILL)."""

    def __init__(self, process: subprocess.Popen[bytes] | None = None) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=EXIT_SECONDS)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


class Server(Process):
    """``python -m casemgr serve`` on an ephemeral port (or another command, for hooks)."""

    def __init__(self, site: Site, log: Path, *, command: list[str] | None = None, **env: str):
        super().__init__()
        self.site = site
        self.log = log
        self.command = command or [sys.executable, "-m", "casemgr"]
        self.env = env
        self.port = 0

    def start(self) -> Server:
        for _attempt in range(3):  # another program may take the port between probe and bind
            self.port = free_port()
            with self.log.open("ab") as log:
                log.write(f"--- start on port {self.port}\n".encode())
                log.flush()
                self.process = subprocess.Popen(
                    [*self.command, "serve", "--port", str(self.port)],
                    cwd=PROJECT_ROOT,
                    env=self.site.env(**self.env),
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            if self._wait_until_up():
                return self
        raise AssertionError(f"the service did not start:\n{self.log_text()[-3000:]}")

    def _wait_until_up(self) -> bool:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if "address already in use" in self.log_text().lower():
                    return False
                raise AssertionError(f"the service exited:\n{self.log_text()[-3000:]}")
            if _health_ok(self.port):
                return True
            time.sleep(0.05)  # polling for start-up, not a synchronisation guess
        raise AssertionError(f"the service did not answer /health:\n{self.log_text()[-3000:]}")

    def stop(self) -> bool:
        """SIGTERM, as a supervisor stops it: the service finishes, seals and exits.

        True when it exited as it should (uvicorn re-raises the signal once it has shut
        down, so the status is that of SIGTERM).
        """
        assert self.process is not None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=EXIT_SECONDS) in (0, -signal.SIGTERM)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def _health_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@contextlib.contextmanager
def serving(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Start the servers; whatever happens, none outlives the test."""
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            if server.process is not None and server.alive():
                with contextlib.suppress(ProcessLookupError):
                    server.thaw()
                server.process.kill()
                server.process.wait(timeout=EXIT_SECONDS)


# -- a lean HTTP/1.1 client ------------------------------------------------------------------
#
# Keep-alive connections on asyncio streams: the load costs the shared CPUs far less than
# the service it loads (an httpx request costs several times more).


@dataclass
class Answer:
    status: int  # -1: the connection failed (refused, reset, closed mid-answer)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Answer:
        if json_body is not None:
            body, content_type = json.dumps(json_body).encode(), "application/json"
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if body is not None:
            lines.append(f"Content-Type: {content_type}")
            lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                if self._writer is None:
                    self._reader, self._writer = await asyncio.open_connection(
                        "127.0.0.1", self.port
                    )
                assert self._reader is not None
                self._writer.write(payload)
                await self._writer.drain()
                answer = await _read_answer(self._reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            return Answer(-1)
        if answer.headers.get("connection", "").lower() == "close":
            await self.close()
        return answer


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunks.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(chunk[:-2] for chunk in chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


# -- windows: is a process inside the step worth killing it in? -------------------------------


def sqlite_write_locked(path: Path) -> bool:
    """Whether some connection holds the SQLite file's write lock (a write transaction)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return True
            raise
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


async def pg_open_writes(database: str, pattern: str) -> int:
    """Transactions of other sessions that wrote and have not ended, whose latest statement
    matches ``pattern`` (a regular expression, case-insensitive); a COMMIT on its way
    does not count."""
    conn = await asyncpg.connect(pg_dsn(database))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_xid IS NOT NULL"
                " AND state IN ('active', 'idle in transaction')"
                " AND query ~* $1",
                pattern,
            )
        )
    finally:
        await conn.close()


async def kill_inside(
    server: Process,
    window_open: Callable[[], Awaitable[bool]],
    *,
    seconds: float = START_SECONDS,
) -> None:
    """SIGKILL ``server`` at a moment when ``window_open()`` holds.

    The process is frozen (SIGSTOP) when the window looks open and the window is checked
    again while it cannot move: the kill lands inside the window for certain, not by luck
    of timing. When it closed in between, the process runs on and the watch goes on.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.alive(), "the process ended before the window opened"
        if await window_open():
            server.freeze()
            try:
                if await window_open():
                    server.kill()
                    return
            finally:
                if server.alive():
                    server.thaw()
        await asyncio.sleep(0.003)  # polling interval, not a synchronisation guess
    raise AssertionError("the window never opened")


@contextlib.asynccontextmanager
async def connections(port: int, count: int) -> AsyncIterator[list[Connection]]:
    conns = [Connection(port) for _ in range(count)]
    try:
        yield conns
    finally:
        for conn in conns:
            await conn.close()
