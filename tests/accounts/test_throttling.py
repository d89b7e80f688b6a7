"""Failed logins are throttled per account and per client, and audited without secrets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.accounts import services
from casemgr.app import create_app
from casemgr.settings import Settings
from tests.accounts.helpers import audit_events, login, raw_rows
from tests.factories import PASSWORD

PER_ACCOUNT = 3
PER_CLIENT = 5
WRONG_PASSWORD = "Tr0ub4dor&3-wrong-guess"


@pytest.fixture
def strict_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        login_max_failures_per_account=PER_ACCOUNT,
        login_max_failures_per_client=PER_CLIENT,
    )


@pytest.fixture
def strict_client(strict_settings: Settings) -> Iterator[Any]:
    with TestClient(create_app(strict_settings), raise_server_exceptions=False) as client:
        yield client


def assert_throttled(r: Any) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["status"] == 429
    assert "token" not in r.json()


def test_failures_for_one_account_lock_it_even_for_the_right_password(strict_client, world, db):
    client = strict_client
    for _ in range(PER_ACCOUNT):
        assert login(client, "ct_a1", WRONG_PASSWORD).status_code == 401

    assert_throttled(login(client, "ct_a1", PASSWORD))
    # Typing the name differently does not dodge the per-account count.
    assert_throttled(login(client, "CT_A1", PASSWORD))
    # The limit is per account: another account from the same client still gets in.
    assert login(client, "ct_b1", PASSWORD).status_code == 200

    denied = audit_events(db, action="auth:login", outcome="deny")
    assert [e.detail for e in denied] == [
        *['{"reason":"credentials"}'] * PER_ACCOUNT,
        '{"reason":"throttled"}',
        '{"reason":"throttled"}',
    ]
    assert {e.actor_id for e in denied[: PER_ACCOUNT + 1]} == {world["ct_a1"].id}
    # The caller of a throttled attempt is not told whether the account exists, and the
    # trail holds no trace of the password that was tried.
    for row in raw_rows(db, "audit_events") + raw_rows(db, "login_failures"):
        assert WRONG_PASSWORD not in row


def test_failures_across_accounts_from_one_client_throttle_the_client(
    strict_client, strict_settings, world, db
):
    client = strict_client
    guessed = [f"guessed-name-{n}" for n in range(PER_CLIENT)]
    for username in guessed:
        assert login(client, username, WRONG_PASSWORD).status_code == 401

    assert_throttled(login(client, "another-guess", WRONG_PASSWORD))
    assert_throttled(login(client, "ct_a1", PASSWORD))

    denied = audit_events(db, action="auth:login", outcome="deny")
    assert [e.detail for e in denied] == [
        *['{"reason":"credentials"}'] * PER_CLIENT,
        '{"reason":"throttled"}',
        '{"reason":"throttled"}',
    ]
    # Unknown names have no actor; the typed names and passwords are nowhere in the trail
    # or in the throttling table (which keeps keyed digests only).
    assert all(e.actor_id is None for e in denied[:-1])
    rows = raw_rows(db, "audit_events") + raw_rows(db, "login_failures")
    assert len(raw_rows(db, "login_failures")) == 2 * PER_CLIENT
    for row in rows:
        assert WRONG_PASSWORD not in row
        assert "guessed-name" not in row
        assert "another-guess" not in row

    # The same account from another client is not affected: the limit is per client.
    async def from_elsewhere(sessions: async_sessionmaker[AsyncSession]) -> services.LoginResult:
        return await services.login(
            sessions,
            db.crypto,
            strict_settings,
            username="ct_a1",
            password=PASSWORD,
            totp=None,
            client="198.51.100.7",
        )

    assert db.run(from_elsewhere).token
