"""Request-scoped dependencies shared by every controller."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.accounts.services import resolve_token
from casemgr.authz import Authorizer, Principal
from casemgr.context import RequestContext
from casemgr.crypto import Crypto
from casemgr.errors import Unauthenticated
from casemgr.settings import Settings


async def provide_db_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request: committed when the handler succeeds, else rolled back.

    Audit events are written in this same transaction, so an access whose trace cannot be
    committed fails as a whole.
    """
    session: AsyncSession = state.sessions()
    try:
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


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
