"""A TOTP code opens one session, even when two logins present it at the same moment."""

from __future__ import annotations

import asyncio
from typing import Any

from casemgr.accounts import passwords, services
from casemgr.db import create_engine, create_sessionmaker
from casemgr.errors import LoginFailed
from tests.factories import PASSWORD


def test_one_totp_code_cannot_open_two_concurrent_logins(settings, world, db, monkeypatch):
    counselor = world["counselor_a"]
    code = counselor.totp_now()
    count_tokens = "SELECT COUNT(*) FROM auth_tokens WHERE user_id = :u"
    tokens_before = db.execute(count_tokens, {"u": db.id(counselor.id)})[0][0]
    arrived = 0
    both_checked_password: asyncio.Event | None = None

    async def verify_in_step(stored: str, password: str) -> tuple[bool, bool]:
        # Both logins have read the account and checked the password before either goes on
        # to the second factor: the interleaving that lets a code count twice.
        nonlocal arrived
        assert both_checked_password is not None
        arrived += 1
        if arrived == 2:
            both_checked_password.set()
        await asyncio.wait_for(both_checked_password.wait(), timeout=10)
        return True, False

    monkeypatch.setattr(passwords, "verify_password", verify_in_step)

    async def main() -> list[str]:
        nonlocal both_checked_password
        both_checked_password = asyncio.Event()
        engine = create_engine(settings.database_url)
        sessions = create_sessionmaker(engine)

        async def attempt(client: str) -> str:
            try:
                await services.login(
                    sessions,
                    db.crypto,
                    settings,
                    username=counselor.username,
                    password=PASSWORD,
                    totp=code,
                    client=client,
                )
            except LoginFailed:
                return "refused"
            return "accepted"

        try:
            return list(await asyncio.gather(attempt("192.0.2.1"), attempt("192.0.2.2")))
        finally:
            await engine.dispose()

    outcomes: Any = asyncio.run(main())

    assert sorted(outcomes) == ["accepted", "refused"]
    assert db.execute(count_tokens, {"u": db.id(counselor.id)})[0][0] == tokens_before + 1
