"""Login throttling (issue 5, findings 1 and 6): tight per (account, client) pair, growing
delays per account and per client, exempt clients the account knows, and atomic
reservations that 200 parallel requests cannot outrun (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import clock
from casemgr.accounts import passwords, services
from casemgr.app import create_app
from casemgr.db import create_engine, create_sessionmaker
from casemgr.errors import LoginFailed, TooManyAttempts
from casemgr.settings import Settings
from tests.accounts.helpers import audit_events, raw_rows
from tests.factories import PASSWORD

PER_PAIR = 3
PER_ACCOUNT = 4
PER_CLIENT = 6
WRONG_PASSWORD = "Tr0ub4dor&3-wrong-guess"
T0 = datetime(2026, 10, 12, 8, 0, tzinfo=UTC)


@pytest.fixture
def strict_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        login_max_failures_per_pair=PER_PAIR,
        login_max_failures_per_account=PER_ACCOUNT,
        login_max_failures_per_client=PER_CLIENT,
        login_delay_base_seconds=10,
        login_delay_max_seconds=80,
    )


@pytest.fixture
def frozen() -> Iterator[None]:
    clock.freeze(T0)
    yield
    clock.reset()


def attempt(db: Any, settings: Settings, username: str, password: str, client: str) -> str | int:
    """One login through the service: "ok", 401 or 429 (with Retry-After checked)."""

    async def body(sessions: async_sessionmaker[AsyncSession]) -> str | int:
        try:
            await services.login(
                sessions,
                db.crypto,
                settings,
                username=username,
                password=password,
                totp=None,
                client=client,
            )
        except LoginFailed:
            return 401
        except TooManyAttempts as exc:
            assert exc.retry_after > 0
            return 429
        return "ok"

    return db.run(body)


def test_pair_limit_stops_one_client_guessing_but_not_the_account_elsewhere(
    db, world, strict_settings, frozen
):
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "198.51.100.20") == "ok"
    for _ in range(PER_PAIR):
        assert attempt(db, strict_settings, "ct_a1", WRONG_PASSWORD, "203.0.113.9") == 401
    # The guessing client is stopped, even with the right password now...
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "203.0.113.9") == 429
    # ...typing the name differently does not dodge it...
    assert attempt(db, strict_settings, "CT_A1", PASSWORD, "203.0.113.9") == 429
    # ...and the teacher on their usual client is not locked out.
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "198.51.100.20") == "ok"
    # When the window ends the pair may try again.
    clock.freeze(T0 + timedelta(seconds=strict_settings.login_failure_window_seconds + 1))
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "203.0.113.9") == "ok"


def test_distributed_guessing_slows_to_growing_delays_yet_a_known_client_gets_in(
    db, world, strict_settings, frozen
):
    """An attacker spread over many addresses cannot lock a teacher out of a correct login."""
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "198.51.100.20") == "ok"
    for n in range(PER_ACCOUNT):
        assert attempt(db, strict_settings, "ct_a1", WRONG_PASSWORD, f"203.0.113.{n}") == 401
    # Past the free failures, a new address must wait the first delay (10 s)...
    assert attempt(db, strict_settings, "ct_a1", WRONG_PASSWORD, "203.0.113.50") == 429
    # ...while the teacher's known client is not delayed at all.
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "198.51.100.20") == "ok"
    # The delays double: after 10 s one more guess is checked, then 20 s more are needed.
    clock.freeze(T0 + timedelta(seconds=10))
    assert attempt(db, strict_settings, "ct_a1", WRONG_PASSWORD, "203.0.113.51") == 401
    assert attempt(db, strict_settings, "ct_a1", WRONG_PASSWORD, "203.0.113.52") == 429
    clock.freeze(T0 + timedelta(seconds=29))
    assert attempt(db, strict_settings, "ct_a1", WRONG_PASSWORD, "203.0.113.53") == 429
    clock.freeze(T0 + timedelta(seconds=30))
    assert attempt(db, strict_settings, "ct_a1", WRONG_PASSWORD, "203.0.113.54") == 401
    # A teacher on a new client is slowed by the same delays, never refused for good.
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "192.0.2.77") == 429
    clock.freeze(T0 + timedelta(seconds=70))
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "192.0.2.77") == "ok"


def test_one_address_guessing_many_accounts_does_not_lock_out_its_known_users(
    db, world, strict_settings, frozen
):
    """A school behind one address: a guesser there must not lock every teacher out."""
    school_nat = "198.51.100.1"
    assert attempt(db, strict_settings, "ct_b1", PASSWORD, school_nat) == "ok"
    for n in range(PER_CLIENT):
        assert attempt(db, strict_settings, f"guessed-name-{n}", WRONG_PASSWORD, school_nat) == 401
    assert attempt(db, strict_settings, "another-guess", WRONG_PASSWORD, school_nat) == 429
    # A teacher who logged in from this address before still gets in at once.
    assert attempt(db, strict_settings, "ct_b1", PASSWORD, school_nat) == "ok"
    # The same account from anywhere else is not affected by this address's count.
    assert attempt(db, strict_settings, "ct_a1", PASSWORD, "192.0.2.1") == "ok"


def test_throttled_attempts_are_audited_without_what_was_typed(client, db, world, strict_settings):
    with TestClient(create_app(strict_settings), raise_server_exceptions=False) as strict:
        for _ in range(PER_PAIR):
            r = strict.post(
                "/api/v1/auth/login", json={"username": "ct_a1", "password": WRONG_PASSWORD}
            )
            assert r.status_code == 401
        r = strict.post("/api/v1/auth/login", json={"username": "ct_a1", "password": PASSWORD})
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) > 0
    assert "token" not in r.json()

    denied = audit_events(db, action="auth:login", outcome="deny")
    assert [e.detail for e in denied] == [
        *['{"reason":"credentials"}'] * PER_PAIR,
        '{"reason":"throttled"}',
    ]
    assert {e.actor_id for e in denied} == {world["ct_a1"].id}
    assert all(e.client_addr == "testclient" for e in denied)
    for row in raw_rows(db, "audit_events") + raw_rows(db, "login_throttle"):
        assert WRONG_PASSWORD not in row
        assert "ct_a1" not in row


@pytest.mark.parametrize("spread", ["one-client", "many-clients"])
def test_two_hundred_parallel_logins_check_at_most_the_limit(
    db, world, settings, monkeypatch, frozen, spread
):
    """Finding 1: the race. Two engines stand for two service processes.

    The clock stands still: the 200 arrive at one instant, so the growing delays that
    would admit one more guess a second later play no part.
    """
    limit = 5
    racing = dataclasses.replace(
        settings,
        login_max_failures_per_pair=limit,
        login_max_failures_per_account=limit,
        login_max_failures_per_client=1000,
    )
    checked: list[str] = []
    real_verify = passwords.verify_password

    async def counting_verify(stored: str, password: str) -> tuple[bool, bool]:
        checked.append(password)
        return await real_verify(stored, password)

    monkeypatch.setattr(passwords, "verify_password", counting_verify)

    async def race() -> list[Any]:
        engines = [create_engine(settings.database_url) for _ in range(2)]
        makers = [create_sessionmaker(e) for e in engines]

        async def one(n: int) -> Any:
            password = PASSWORD if n == 199 else f"{WRONG_PASSWORD}-{n}"
            client = "203.0.113.5" if spread == "one-client" else f"10.1.{n // 250}.{n % 250}"
            try:
                await services.login(
                    makers[n % 2],
                    db.crypto,
                    racing,
                    username="ct_a1",
                    password=password,
                    totp=None,
                    client=client,
                )
            except (LoginFailed, TooManyAttempts) as exc:
                return type(exc).__name__
            return "ok"

        try:
            return await asyncio.gather(*(one(n) for n in range(200)))
        finally:
            for engine in engines:
                await engine.dispose()

    outcomes = asyncio.run(race())
    assert len(checked) <= limit
    assert outcomes.count("LoginFailed") == len([p for p in checked if p != PASSWORD])
    if PASSWORD not in checked:
        assert outcomes[199] == "TooManyAttempts"
    assert outcomes.count("ok") == (1 if PASSWORD in checked else 0)
    assert outcomes.count("TooManyAttempts") >= 200 - limit
