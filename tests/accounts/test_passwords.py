"""Passwords: Argon2id at argon2-cffi's defaults or stronger, upgraded on login, off the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import argon2
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts import passwords
from casemgr.accounts.models import User
from tests.accounts.helpers import login
from tests.factories import PASSWORD

DEFAULTS = argon2.PasswordHasher()


def stored_hash(db: Any, user_id: Any) -> str:
    async def body(session: AsyncSession) -> str:
        user = await session.get(User, user_id)
        assert user is not None
        return user.password_hash

    return db.in_transaction(body)


def assert_strong(encoded: str) -> None:
    assert encoded.startswith("$argon2id$")
    params = argon2.extract_parameters(encoded)
    assert params.type is argon2.Type.ID
    assert params.time_cost >= DEFAULTS.time_cost
    assert params.memory_cost >= DEFAULTS.memory_cost
    # Parallelism is not strength (the same memory and passes, spread over fewer threads);
    # one lane keeps a hash on one core so logins leave the event loop a core (SPEC §8).
    assert params.parallelism >= 1
    assert params.hash_len >= DEFAULTS.hash_len
    assert params.salt_len >= DEFAULTS.salt_len


def test_new_hashes_are_argon2id_at_library_defaults_or_stronger():
    encoded = asyncio.run(passwords.hash_password(PASSWORD))

    assert_strong(encoded)
    assert asyncio.run(passwords.verify_password(encoded, PASSWORD)) == (True, False)
    assert asyncio.run(passwords.verify_password(encoded, PASSWORD + "x")) == (False, False)
    assert asyncio.run(passwords.verify_password("not a hash", PASSWORD)) == (False, False)


def test_stored_account_hash_is_argon2id(world, db):
    assert_strong(stored_hash(db, world["leader_a"].id))


def test_weak_hash_is_replaced_at_the_next_successful_login(client, world, db):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    ct = world["ct_a1"]

    async def weaken(session: AsyncSession) -> None:
        await session.execute(update(User).where(User.id == ct.id).values(password_hash=weak))

    db.in_transaction(weaken)
    assert asyncio.run(passwords.verify_password(weak, PASSWORD)) == (True, True)

    # A failed login leaves the old hash alone.
    assert login(client, "ct_a1", "not the password at all").status_code == 401
    assert stored_hash(db, ct.id) == weak

    assert login(client, "ct_a1").status_code == 200
    upgraded = stored_hash(db, ct.id)
    assert upgraded != weak
    assert_strong(upgraded)
    assert DEFAULTS.verify(upgraded, PASSWORD)


class GatedHasher:
    """Hashes only once the event loop has shown it keeps running meanwhile.

    If hashing ran on the event loop's thread, the loop could not tick, the gate would never
    open, and ``wait`` would time out (a failure, not a hang).
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.opened_in_time: list[bool] = []
        self.threads: list[int] = []
        self._real = argon2.PasswordHasher(time_cost=1, memory_cost=8192)

    def _wait(self) -> None:
        self.threads.append(threading.get_ident())
        self.opened_in_time.append(self.gate.wait(timeout=5))

    def hash(self, password: str) -> str:
        self._wait()
        return self._real.hash(password)

    def verify(self, encoded: str, password: str) -> bool:
        self._wait()
        return self._real.verify(encoded, password)

    def check_needs_rehash(self, encoded: str) -> bool:
        return self._real.check_needs_rehash(encoded)


@pytest.mark.parametrize("operation", ["hash", "verify"])
def test_hashing_runs_off_the_event_loop(monkeypatch, operation):
    gated = GatedHasher()
    monkeypatch.setattr(passwords, "_hasher", gated)
    encoded = gated._real.hash(PASSWORD)
    ticks = 0

    async def ticker(task: asyncio.Future[Any]) -> None:
        nonlocal ticks
        while not task.done():
            await asyncio.sleep(0)
            ticks += 1
            if ticks == 20:
                gated.gate.set()

    async def main() -> tuple[Any, int]:
        if operation == "hash":
            work = asyncio.ensure_future(passwords.hash_password(PASSWORD))
        else:
            work = asyncio.ensure_future(passwords.verify_password(encoded, PASSWORD))
        await asyncio.gather(work, ticker(work))
        return work.result(), threading.get_ident()

    result, loop_thread = asyncio.run(main())

    assert gated.opened_in_time == [True]
    assert ticks >= 20
    assert gated.threads != [loop_thread]
    if operation == "hash":
        assert gated._real.verify(result, PASSWORD)
    else:
        assert result == (True, False)


def test_no_connection_is_held_while_the_password_is_checked(settings, world, db, monkeypatch):
    """Argon2 takes tens of milliseconds: holding a transaction (on SQLite, the write lock)
    across it would stall every other request behind a burst of logins."""
    import asyncio

    from sqlalchemy import event

    from casemgr.accounts import services
    from casemgr.db import create_engine, create_sessionmaker
    from tests.factories import PASSWORD

    held_during_check: list[int] = []
    balance = {"out": 0}
    real_verify = passwords.verify_password

    async def observing_verify(stored: str, password: str) -> tuple[bool, bool]:
        held_during_check.append(balance["out"])
        return await real_verify(stored, password)

    monkeypatch.setattr(passwords, "verify_password", observing_verify)

    async def main() -> str:
        engine = create_engine(settings.database_url)

        def checkout(*_: object) -> None:
            balance["out"] += 1

        def checkin(*_: object) -> None:
            balance["out"] -= 1

        event.listen(engine.sync_engine, "checkout", checkout)
        event.listen(engine.sync_engine, "checkin", checkin)
        try:
            result = await services.login(
                create_sessionmaker(engine),
                db.crypto,
                settings,
                username="ct_a1",
                password=PASSWORD,
                totp=None,
                client="192.0.2.9",
            )
            return result.token
        finally:
            await engine.dispose()

    assert asyncio.run(main())
    assert held_during_check == [0]
    assert balance["out"] == 0
