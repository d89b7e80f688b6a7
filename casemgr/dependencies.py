"""Request-scoped dependencies shared by every controller."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.accounts.services import resolve_token
from casemgr.authz import Authorizer, Principal, actor_of
from casemgr.context import RequestContext
from casemgr.crypto import Crypto
from casemgr.db import open_session
from casemgr.errors import Forbidden, Unauthenticated
from casemgr.settings import Settings

# Route handlers marked ``opt={RESTRICTED_OK: True}`` serve an account that still has a
# one-time password or lacks a required second factor (``Principal.restricted``); every
# other route answers such a token 403.
RESTRICTED_OK = "restricted_ok"

# Requests that only read: on SQLite their transactions begin as readers and never wait
# for the writer (``casemgr.db``). One that writes after all still works.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def provide_db_session(
    state: State, request: Request[Any, Any, Any]
) -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request: committed when the handler succeeds, else rolled back.

    The request's audit events are written before the answer leaves: in this same
    transaction when it changed data (the change and its trace commit together or not at
    all), else, once the session is closed, in the audit appender's next batch
    (``casemgr.audit.services``). Either way an access whose trace cannot be committed
    fails as a whole.
    """
    session = open_session(state.sessions, read_only=request.method in READ_METHODS)
    audit.defer_events(session, audit.appender_for(state.engine))
    committed = False
    try:
        yield session
        await session.commit()
        committed = True
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()
        if committed:
            # Before the answer leaves; raising here turns it into a failure (SPEC P4).
            await audit.write_handed_over(session)
        else:
            # The request fails anyway; what its committed transactions did still counts.
            with contextlib.suppress(Exception):
                await audit.write_handed_over(session)


async def provide_principal(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], state: State
) -> Principal:
    """The caller behind the bearer token; 401 for a missing, expired or revoked one.

    A dependency that raises stops Litestar from running the cleanup of the dependencies
    it was given, so the request's session is closed here before any error leaves.
    """
    try:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("A bearer token is required.")
        client = request.client.host if request.client else None
        principal = await resolve_token(
            db_session,
            token.strip(),
            idle_seconds=state.settings.token_idle_seconds,
            client=client,
        )
        if principal is None:
            raise Unauthenticated("The token is not valid or has expired.")
        if principal.restricted and not request.route_handler.opt.get(RESTRICTED_OK):
            await audit.record_denial(
                db_session,
                audit.Action.RESTRICTED,
                actor=actor_of(principal),
                resource_type="session",
                resource_id=principal.token_id,
                detail={"status": 403},
            )
            raise Forbidden(
                "Change your one-time password first, and enrol a second factor where your"
                " role needs one (POST /api/v1/me/password, POST /api/v1/me/totp)."
            )
    except BaseException:
        await db_session.close()
        raise
    return principal


def provide_context(
    state: State, db_session: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
) -> RequestContext:
    """The request's transaction, caller and guards in one object (``casemgr.context``)."""
    return RequestContext(db_session, state.crypto, state.authorizer, principal, state.settings)


def provide_sessions(state: State) -> async_sessionmaker[AsyncSession]:
    """For services that run several transactions of their own (login)."""
    sessions: async_sessionmaker[AsyncSession] = state.sessions
    return sessions


def provide_crypto(state: State) -> Crypto:
    crypto: Crypto = state.crypto
    return crypto


def provide_authorizer(state: State) -> Authorizer:
    authorizer: Authorizer = state.authorizer
    return authorizer


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


# Handlers name their dependencies with these aliases (Litestar's explicit named DI).
DbSession = NamedDependency[AsyncSession]
Sessions = NamedDependency[async_sessionmaker[AsyncSession]]
CurrentPrincipal = NamedDependency[Principal]
Ctx = NamedDependency[RequestContext]
CryptoDep = NamedDependency[Crypto]
AuthorizerDep = NamedDependency[Authorizer]
SettingsDep = NamedDependency[Settings]
