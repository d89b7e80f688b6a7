"""Login throttling that parallel requests cannot outrun and attackers cannot turn into a weapon.

Three counters, each a row of ``login_throttle`` keyed by a keyed digest:

- the (account, client) **pair**: ``max_failures_per_pair`` failures in a window and that
  pair gets 429 until the window ends. It is the tight limit, and only failures from that
  client for that account count towards it;
- the **account** and the **client** (all accounts from one address): past a number of
  free failures, each further attempt must wait for a delay that doubles each time (up to
  a cap), counted from the counter's window start. Clients the account logged in from
  successfully before (``login_known_clients``) are exempt, so an attacker elsewhere can
  slow guessing to a crawl without locking a teacher out of a correct login.

An attempt is *reserved* before the password hash is computed, by one atomic upsert per
counter (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, on SQLite and PostgreSQL
alike), so 200 parallel requests get 200 distinct attempt numbers and only those the rules
admit are ever checked. A reservation the rules refuse is released at once; a checked
attempt keeps its reservation when it fails and releases it when it succeeds. The counters
live in the database, so several service processes share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts.models import KnownClient, LoginThrottle
from casemgr.crypto import Crypto
from casemgr.db import utcnow
from casemgr.settings import Settings

KNOWN_CLIENT_DAYS = 90
_throttle = cast(Table, LoginThrottle.__table__)


@dataclass(frozen=True)
class Keys:
    """Keyed digests naming what an attempt counts against; never what was typed."""

    pair: bytes
    account: bytes
    client: bytes

    @classmethod
    def of(cls, crypto: Crypto, username: str, client: str) -> Keys:
        def digest(kind: str, value: str) -> bytes:
            return crypto.blind_index("login-throttle", value, kind)[:16]

        return cls(
            pair=digest("pair", f"{username}\x1f{client}"),
            account=digest("account", username),
            client=digest("client", client),
        )


@dataclass(frozen=True)
class Reservation:
    """The counters an admitted attempt holds, to release on success."""

    keys: Keys
    held: tuple[bytes, ...]


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("throttled")
        self.retry_after = max(1, retry_after)


def _upsert(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_throttle)


async def _reserve(
    session: AsyncSession, key: bytes, now: datetime, window: timedelta
) -> tuple[int, datetime]:
    """Count one more attempt under ``key`` atomically; return its number and window start."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    cutoff = now - window
    stmt = _upsert(dialect).values(key=key, window_start=now, attempts=1, updated_at=now)
    expired = _throttle.c.window_start < cutoff
    stmt = stmt.on_conflict_do_update(
        index_elements=[_throttle.c.key],
        set_={
            "attempts": case((expired, 1), else_=_throttle.c.attempts + 1),
            "window_start": case((expired, now), else_=_throttle.c.window_start),
            "updated_at": now,
        },
    ).returning(_throttle.c.attempts, _throttle.c.window_start)
    row = (await session.execute(stmt)).one()
    return int(row.attempts), row.window_start


async def release(session: AsyncSession, *keys: bytes) -> None:
    if keys:
        await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key.in_(keys), LoginThrottle.attempts > 0)
            .values(attempts=LoginThrottle.attempts - 1)
            .execution_options(synchronize_session=False)
        )


def _delayed_until(
    attempt: int, window_start: datetime, free: int, base: float, cap: float
) -> datetime | None:
    """When attempt number ``attempt`` may run: free ones at once, then doubling gaps."""
    if attempt <= free:
        return None
    extra = attempt - free
    # base + 2 base + 4 base ... while below the cap, then one cap per further attempt.
    doublings = 0
    while doublings < extra and base * 2**doublings < cap:
        doublings += 1
    wait = base * (2**doublings - 1) + cap * (extra - doublings)
    return window_start + timedelta(seconds=wait)


async def is_known(session: AsyncSession, keys: Keys, now: datetime) -> bool:
    since = now - timedelta(days=KNOWN_CLIENT_DAYS)
    found = await session.scalar(
        select(KnownClient.last_success_at).where(
            KnownClient.account_key == keys.account,
            KnownClient.client_key == keys.client,
            KnownClient.last_success_at >= since,
        )
    )
    return found is not None


async def admit(session: AsyncSession, settings: Settings, keys: Keys) -> Reservation:
    """Reserve an attempt or raise ``Throttled`` (having released what it reserved)."""
    now = utcnow()
    pair_window = timedelta(seconds=settings.login_failure_window_seconds)
    held: list[bytes] = []
    attempt, started = await _reserve(session, keys.pair, now, pair_window)
    held.append(keys.pair)
    if attempt > settings.login_max_failures_per_pair:
        await release(session, *held)
        raise Throttled(int((started + pair_window - now).total_seconds()) + 1)
    if not await is_known(session, keys, now):
        delay_window = timedelta(seconds=settings.login_delay_window_seconds)
        for key, free in (
            (keys.account, settings.login_max_failures_per_account),
            (keys.client, settings.login_max_failures_per_client),
        ):
            attempt, started = await _reserve(session, key, now, delay_window)
            held.append(key)
            until = _delayed_until(
                attempt,
                started,
                free,
                settings.login_delay_base_seconds,
                settings.login_delay_max_seconds,
            )
            if until is not None and until > now:
                await release(session, *held)
                raise Throttled(int((until - now).total_seconds()) + 1)
    return Reservation(keys, tuple(held))


async def succeeded(session: AsyncSession, reservation: Reservation) -> None:
    """A correct login: forget the pair's failures, release the rest, remember the client."""
    now = utcnow()
    keys = reservation.keys
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys.pair))
    await release(session, *(k for k in reservation.held if k != keys.pair))
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(KnownClient).values(
        account_key=keys.account, client_key=keys.client, last_success_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[KnownClient.account_key, KnownClient.client_key],
            set_={"last_success_at": now},
        )
    )


async def forget_old(session: AsyncSession, settings: Settings) -> None:
    """Drop counters nobody touched for longer than any window (keeps the table small)."""
    now = utcnow()
    longest = max(settings.login_failure_window_seconds, settings.login_delay_window_seconds)
    await session.execute(
        delete(LoginThrottle).where(LoginThrottle.updated_at < now - timedelta(seconds=longest))
    )
    await session.execute(
        delete(KnownClient).where(
            KnownClient.last_success_at < now - timedelta(days=KNOWN_CLIENT_DAYS)
        )
    )
