"""The service's idea of "now", in one place, so tests can move time.

Everything that compares with the present (token expiry, login delays, due and overdue
tasks, emergency grants, retention, screening expiry) asks this module. Tests shift or
freeze it with ``set_offset`` / ``freeze`` (the ``clock`` fixture); production never does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

_offset = timedelta(0)
_frozen: datetime | None = None


def now() -> datetime:
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC) + _offset


def today() -> date:
    return now().date()


def set_offset(offset: timedelta) -> None:
    global _offset
    _offset = offset


def freeze(at: datetime | None) -> None:
    """Stop the clock at ``at`` (None lets it run again)."""
    global _frozen
    if at is not None and at.tzinfo is None:
        raise ValueError("freeze the clock at an aware datetime")
    _frozen = at


def reset() -> None:
    set_offset(timedelta(0))
    freeze(None)
