"""The database out of reach: 503 with Retry-After, never 500; liveness and readiness; the
SQLite writer's slow turns logged. (A PostgreSQL restart under load: tests/stress/.)"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import exc as sa_exc

from casemgr.app import create_app
from casemgr.db import SLOW_WRITER_WAIT_MESSAGE, WriterQueue, WriterTimeout
from casemgr.problems import RETRY_AFTER_SECONDS, database_unavailable, unexpected_error
from casemgr.settings import Settings
from tests.audit.helpers import (
    build_chain,
    checkpoint_rows,
    delete_checkpoint_rows,
    intrude,
    verify,
)

# Nothing listens on port 1: every connection is refused at once.
UNREACHABLE = "postgresql+asyncpg://casemgr@127.0.0.1:1/casemgr"
LOCKED = "database is locked"  # SQLite, once its busy timeout has run out


class _DriverError(Exception):
    """A driver's error as SQLAlchemy's asyncpg adapter hands it over (with a SQLSTATE)."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("server message")
        self.sqlstate = sqlstate


def _wrapped(orig: BaseException, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("SELECT 1", None, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


def _group(*members: Exception, cause: BaseException | None = None) -> ExceptionGroup[Exception]:
    group = ExceptionGroup("cleanup", list(members))
    group.__cause__ = cause
    return group


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (ConnectionResetError(104, "reset"), True),
        (_wrapped(_DriverError("57P01")), True),  # admin shutdown: the server restarts
        (_wrapped(_DriverError("57P03")), True),  # cannot connect now: starting up
        (_wrapped(_DriverError("08006")), True),  # connection failure
        (_wrapped(_DriverError("53300")), True),  # too many connections
        (_wrapped(Exception("gone"), invalidated=True), True),  # the pool dropped it
        (sa_exc.TimeoutError("QueuePool limit reached"), True),  # no connection to spare
        (
            sa_exc.OperationalError("BEGIN", None, sqlite3.OperationalError("database is locked")),
            True,
        ),
        (WriterTimeout(30.5), True),
        (_group(ConnectionRefusedError()), True),
        (_group(ValueError("cleanup"), cause=ConnectionRefusedError()), True),
        # Faults that no waiting cures stay 500s, so that they are seen.
        (_wrapped(_DriverError("23505")), False),  # unique violation
        (_wrapped(_DriverError("40P01")), False),  # deadlock
        (sa_exc.OperationalError("x", None, sqlite3.OperationalError("no such table: x")), False),
        (ValueError("bug"), False),
        (_group(ValueError("bug"), ConnectionRefusedError()), False),
    ],
)
def test_which_errors_mean_the_database_is_out_of_reach(error: Exception, unavailable: bool):
    assert database_unavailable(error) is unavailable


def test_the_handler_answers_503_with_retry_after_and_logs_no_message(caplog):
    request: Any = SimpleNamespace(method="GET", url=SimpleNamespace(path="/api/v1/cases"))
    secret = "host=db.internal password=hunter2"
    with caplog.at_level(logging.WARNING, logger="casemgr"):
        response = unexpected_error(request, _wrapped(Exception(secret), invalidated=True))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.media_type == "application/problem+json"
    assert secret not in caplog.text and secret not in str(response.content)
    assert "database unavailable (DBAPIError) on GET /api/v1/cases" in caplog.text


@pytest.fixture
def unreachable(tmp_path: Path, keys_dir: Path) -> Any:
    settings = Settings(
        database_url=UNREACHABLE,
        keys_dir=keys_dir,
        var_dir=tmp_path / "var",
        checkpoint_file=tmp_path / "var" / "audit-checkpoints.jsonl",
        checkpoint_interval_seconds=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_with_the_database_down_requests_answer_503_and_health_stays_200(unreachable):
    assert unreachable.get("/health").status_code == 200
    for response in (
        unreachable.get("/ready"),
        unreachable.get("/api/v1/me", headers={"Authorization": "Bearer x" * 3}),
        unreachable.post("/api/v1/auth/login", json={"username": "anyone", "password": "x"}),
    ):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["title"] == "Service unavailable"


def test_a_page_answers_503_with_retry_after_too(unreachable):
    unreachable.cookies.set("casemgr_session", "a-session-that-needs-the-database")
    response = unreachable.get("/my")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["content-type"].startswith("text/html")


def test_ready_when_the_database_answers(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    assert response.headers["cache-control"] == "no-store"


def test_not_ready_before_the_database_is_migrated(tmp_path: Path, keys_dir: Path):
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
        keys_dir=keys_dir,
        var_dir=tmp_path / "var",
        checkpoint_file=tmp_path / "var" / "audit-checkpoints.jsonl",
        checkpoint_interval_seconds=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        assert client.get("/health").status_code == 200


def test_a_writer_that_waited_past_the_threshold_is_logged(caplog):
    """The stress tests assert that no such line appears under load; here, that it does
    appear when a writer waits longer than the threshold (0 here: any wait at all)."""
    prefix = SLOW_WRITER_WAIT_MESSAGE.split(":", 1)[0]

    async def main() -> None:
        queue = WriterQueue(slow_wait=0.0)
        holder = await queue.acquire()
        waiter = asyncio.create_task(queue.acquire())
        await asyncio.sleep(0)  # the waiter queues behind the holder
        holder.release()
        (await waiter).release()

    with caplog.at_level(logging.WARNING, logger="casemgr.db"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if prefix in r.getMessage()], caplog.text

    caplog.clear()

    async def uncontended() -> None:
        queue = WriterQueue(slow_wait=0.0)
        (await queue.acquire()).release()  # a free lock: no wait, nothing to log

    with caplog.at_level(logging.WARNING, logger="casemgr.db"):
        asyncio.run(uncontended())
    assert prefix not in caplog.text


def test_the_service_repairs_an_interrupted_checkpoint_as_it_starts(db: Any, settings: Settings):
    """A crash between a checkpoint's file line and its database row leaves the two copies
    at odds, which verification reports. The service seals as it starts (then every
    interval), and that seal restores the row: the report does not last an interval."""
    build_chain(db, settings, checkpoints_at=(5, 10))
    intrude(db, lambda session: delete_checkpoint_rows(session, above=5))
    assert not verify(db, settings).ok
    hourly = dataclasses.replace(settings, checkpoint_interval_seconds=3600)
    with TestClient(create_app(hourly)):
        deadline = time.monotonic() + 30
        while 10 not in checkpoint_rows(db) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling for the start-up seal, not a synchronisation guess
        assert checkpoint_rows(db)[:2] == [5, 10]
        assert verify(db, settings).ok
