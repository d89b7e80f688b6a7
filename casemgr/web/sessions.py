"""Browser sessions and CSRF tokens.

A session is a row of ``auth_tokens`` with ``kind`` "web", made by the same login as the
API's (``casemgr.accounts.services.login``: one throttle, one audit trail). The cookie
holds the random token; the table holds only its SHA-256 digest. So disabling an account,
resetting or changing its password ends browser sessions together with API tokens, and
``resolve_token`` applies the same idle timeout and absolute lifetime to both.

Cookies are HttpOnly and SameSite=Lax; over HTTPS they are ``Secure`` and carry the
``__Host-`` prefix (no Domain, Path=/), so a neighbouring host cannot plant one. A login
always issues a new token and revokes any session the browser held before, whatever it
was: a session id chosen before login never survives it.

CSRF: every form carries a synchronizer token derived from the browser's secret,
``HMAC-SHA256(key=secret, "casemgr csrf v1")``. The secret is the session token once
signed in and, before that (the sign-in and language forms), a random pre-session value
in a cookie of its own. The token is tied to that one session, says nothing about the
secret, needs no storage, and dies with the session. A state-changing request without the
right token is refused (403) before its handler runs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.accounts.models import AuthToken
from casemgr.accounts.services import LoginResult, login, resolve_token
from casemgr.authz import Principal
from casemgr.crypto import Crypto
from casemgr.db import utcnow
from casemgr.settings import Settings

WEB_KIND = "web"
SESSION_COOKIE = "casemgr_session"
PRE_SESSION_COOKIE = "casemgr_pre"
LANG_COOKIE = "casemgr_lang"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PRE_SESSION_SECONDS = 2 * 3600
LANG_SECONDS = 365 * 24 * 3600
_CSRF_LABEL = b"casemgr csrf v1"


class CsrfRefused(Exception):
    """A state-changing request without the token of the browser's session."""


def is_secure(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    return connection.scope.get("scheme") in ("https", "wss")


def cookie_name(base: str, secure: bool) -> str:
    return f"__Host-{base}" if secure else base


def read_cookie(connection: ASGIConnection[Any, Any, Any, Any], base: str) -> str | None:
    value = connection.cookies.get(cookie_name(base, is_secure(connection)))
    # Tokens are url-safe base64 of 32 bytes; anything else is not one of ours.
    if value is None or not (20 <= len(value) <= 128) or not value.isascii():
        return None
    return value


def set_cookie(
    response: Response[Any],
    request: Request[Any, Any, Any],
    base: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    secure = is_secure(request)
    response.set_cookie(
        cookie_name(base, secure),
        value,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def delete_cookie(response: Response[Any], request: Request[Any, Any, Any], base: str) -> None:
    secure = is_secure(request)
    response.set_cookie(
        cookie_name(base, secure),
        "",
        max_age=0,
        expires=0,
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_token_for(secret: str) -> str:
    return hmac.new(secret.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_secret(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The value a form's token is derived from: the session, else the pre-session."""
    return read_cookie(connection, SESSION_COOKIE) or read_cookie(connection, PRE_SESSION_COOKIE)


def new_pre_session() -> str:
    return secrets.token_urlsafe(32)


async def check_csrf(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A route guard: state-changing requests must carry the session's CSRF token."""
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    secret = csrf_secret(connection)
    sent = connection.headers.get(CSRF_HEADER)
    if sent is None and isinstance(connection, Request):
        form = await connection.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if (
        secret is None
        or not sent
        or not hmac.compare_digest(csrf_token_for(secret).encode(), sent.encode("utf-8", "replace"))
    ):
        await close_uploads(connection)
        raise CsrfRefused()


async def close_uploads(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Close the temporary files of uploaded form parts (an ``after_response`` hook too)."""
    if isinstance(connection, Request) and connection.method not in SAFE_METHODS:
        form = await connection.form()
        await form.close()


async def sign_in(
    sessions: async_sessionmaker[AsyncSession],
    crypto: Crypto,
    settings: Settings,
    *,
    username: str,
    password: str,
    totp: str | None,
    client: str,
    previous: str | None,
) -> LoginResult:
    """Log in exactly as the API does, then make the new token a browser session.

    The session the browser held before (``previous``), if any, is revoked: the id a
    browser had before login never carries over.
    """
    result = await login(
        sessions, crypto, settings, username=username, password=password, totp=totp, client=client
    )
    async with sessions() as session, session.begin():
        await session.execute(
            update(AuthToken)
            .where(AuthToken.token_hash == digest(result.token))
            .values(kind=WEB_KIND, client_addr=client[:45])
        )
        if previous is not None:
            await session.execute(
                update(AuthToken)
                .where(AuthToken.token_hash == digest(previous), AuthToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
    return result


async def resolve_session(
    session: AsyncSession, token: str, settings: Settings, client: str | None
) -> Principal | None:
    """The principal of a live browser session (an API token in the cookie is refused)."""
    kind = await session.scalar(select(AuthToken.kind).where(AuthToken.token_hash == digest(token)))
    if kind != WEB_KIND:
        return None
    return await resolve_token(
        session, token, idle_seconds=settings.token_idle_seconds, client=client
    )


async def session_id_of(session: AsyncSession, token: str) -> uuid.UUID | None:
    return await session.scalar(select(AuthToken.id).where(AuthToken.token_hash == digest(token)))
