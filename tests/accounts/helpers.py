"""Shared helpers for the accounts tests."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Any

import pyotp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts.models import AuthToken
from casemgr.audit.models import AuditEvent
from casemgr.db import utcnow
from tests.factories import PASSWORD

LOGIN = "/api/v1/auth/login"
LOGOUT = "/api/v1/auth/logout"


def login(client: Any, username: str, password: str = PASSWORD, totp: str | None = None) -> Any:
    body: dict[str, Any] = {"username": username, "password": password}
    if totp is not None:
        body["totp"] = totp
    return client.post(LOGIN, json=body)


def wrong_totp(secret: str) -> str:
    """A six-digit code that is not valid anywhere near now (the server accepts ±1 step)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now + 30 * offset) for offset in range(-3, 4)}
    return next(code for code in (f"{n:06d}" for n in range(100)) if code not in valid)


def expire_token(db: Any, token: str) -> None:
    """Move a token's expiry into the past, as if its lifetime had run out."""
    digest = hashlib.sha256(token.encode()).digest()

    async def body(session: AsyncSession) -> None:
        result = await session.execute(
            update(AuthToken)
            .where(AuthToken.token_hash == digest)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        assert result.rowcount == 1

    db.in_transaction(body)


def audit_events(db: Any, **where: Any) -> list[AuditEvent]:
    async def body(session: AsyncSession) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.seq)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(await session.scalars(query))

    return db.in_transaction(body)


def raw_rows(db: Any, table: str) -> list[str]:
    """Every row of ``table`` rendered as text, each column included (for leak scans)."""
    return [repr(tuple(row)) for row in db.execute(f"SELECT * FROM {table}")]
