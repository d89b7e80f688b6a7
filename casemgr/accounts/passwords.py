"""Argon2id password hashing, always off the event loop.

argon2-cffi's default time and memory cost (RFC 9106 low-memory profile) in one lane; a
hash made with other parameters is replaced at the next successful login.
"""

from __future__ import annotations

import functools

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# The library's (RFC 9106 low-memory) time and memory cost, in one lane instead of four:
# a hash then occupies one core, so 20 concurrent logins on a 2-core machine leave the
# event loop a core (other requests' p95 stays under 50 ms; measured by `make bench`).
_DEFAULTS = PasswordHasher()
_hasher = PasswordHasher(
    time_cost=_DEFAULTS.time_cost, memory_cost=_DEFAULTS.memory_cost, parallelism=1
)
_limiter: anyio.CapacityLimiter | None = None
_workers = 2


def configure(workers: int) -> None:
    global _workers, _limiter
    _workers = max(1, workers)
    _limiter = None


def _get_limiter() -> anyio.CapacityLimiter:
    # Hashing takes ~64 MiB and tens of milliseconds each: bound how many run at once so
    # a burst of logins cannot starve the thread pool that other requests share.
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(_workers)
    return _limiter


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


def _verify(stored: str, password: str) -> tuple[bool, bool]:
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return True, _hasher.check_needs_rehash(stored)


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(hash_password_sync, password, limiter=_get_limiter())


async def verify_password(stored: str, password: str) -> tuple[bool, bool]:
    """Return (matches, needs_rehash)."""
    return await anyio.to_thread.run_sync(_verify, stored, password, limiter=_get_limiter())


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("casemgr-dummy-password-for-timing")


async def burn_verification(password: str) -> None:
    """Spend the time a real verification would, for logins of unknown users."""
    dummy = await anyio.to_thread.run_sync(_dummy_hash, limiter=_get_limiter())
    await verify_password(dummy, password)
