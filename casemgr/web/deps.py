"""The reader of a page: the browser session behind the cookie, as a ``Principal``.

Pages get the same ``RequestContext`` as the API (``casemgr.dependencies.provide_context``)
with this principal in place of the bearer token's, so every service decides, decrypts
and audits for a page exactly as it does for the API.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.authz import Principal
from casemgr.dependencies import RESTRICTED_OK
from casemgr.web.sessions import SESSION_COOKIE, read_cookie, resolve_session


class SignInRequired(Exception):
    """No live browser session: the reader is sent to the sign-in page."""


class AccountSetupRequired(Exception):
    """A one-time password to change or a second factor to enrol comes first."""


def client_of(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


async def provide_web_principal(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], state: State
) -> Principal:
    """Like ``provide_principal``, from the session cookie; closes the session on failure."""
    try:
        token = read_cookie(request, SESSION_COOKIE)
        principal = (
            await resolve_session(db_session, token, state.settings, client_of(request))
            if token is not None
            else None
        )
        if principal is None:
            raise SignInRequired()
        if principal.restricted and not request.route_handler.opt.get(RESTRICTED_OK):
            raise AccountSetupRequired()
    except BaseException:
        await db_session.close()
        raise
    return principal
