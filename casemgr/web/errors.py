"""How pages answer errors: HTML in the reader's language, never a value that was typed."""

from __future__ import annotations

import logging
from typing import Any, Literal
from urllib.parse import quote

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Redirect

from casemgr.errors import DomainError, InvalidInput, TooManyAttempts
from casemgr.problems import database_unavailable, retry_after_headers
from casemgr.web.deps import AccountSetupRequired, SignInRequired
from casemgr.web.forms import safe_next
from casemgr.web.render import N_, NO_STORE, page
from casemgr.web.sessions import CsrfRefused

log = logging.getLogger("casemgr.web")

TITLES = {
    400: N_("The request could not be read"),
    401: N_("Please sign in"),
    403: N_("You do not have access to this page"),
    404: N_("Not found"),
    405: N_("Not found"),
    409: N_("This conflicts with an existing record"),
    413: N_("The file is too large"),
    415: N_("The request could not be read"),
    422: N_("Some fields need correcting"),
    429: N_("Too many attempts"),
    500: N_("Something went wrong"),
}
EXPLANATIONS = {
    403: N_("Your role does not allow this. If you think it should, ask your school leader."),
    404: N_("There is no such page or record, or it is not within your reach."),
    409: N_("Nothing was changed."),
    429: N_("Please wait a while before trying again."),
    500: N_("The request failed and nothing was changed. Please try again."),
    # The database out of reach (casemgr.problems; sent with Retry-After). Whether the
    # request changed anything is not known, so the page does not say.
    503: N_("Please wait a while before trying again."),
}


def redirect(path: str, status: Literal[301, 302, 303, 307, 308] = 303) -> Redirect:
    return Redirect(path=path, status_code=status, headers=NO_STORE)


def error_page(
    request: Request[Any, Any, Any],
    status: int,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    *,
    link: tuple[str, str] | None = None,
) -> Response[str]:
    """The error page; ``link`` (path, message) offers one way on besides the start page."""
    return page(
        request,
        "error.html",
        status=status,
        headers=headers,
        title=TITLES.get(status, TITLES[400] if status < 500 else TITLES[500]),
        explanation=EXPLANATIONS.get(status),
        errors=errors or [],
        link=link,
    )


def _sign_in_required(request: Request[Any, Any, Any], _: SignInRequired) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or safe_next(target, "") == "":
        return redirect("/")
    if request.headers.get("hx-request") == "true":
        # A partial request cannot follow a redirect to a whole page; send the browser.
        return Response("", status_code=401, headers={"HX-Redirect": "/", **NO_STORE})
    return redirect("/?next=" + quote(target, safe="/"))


def _setup_required(request: Request[Any, Any, Any], _: AccountSetupRequired) -> Response[Any]:
    return redirect("/account")


def _csrf(request: Request[Any, Any, Any], _: CsrfRefused) -> Response[Any]:
    return error_page(
        request,
        403,
        [
            {
                "field": "",
                "message": N_("The form has expired. Go back, reload the page and try again."),
            }
        ],
    )


def _domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    headers = {}
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    errors = exc.extra.get("errors", []) if isinstance(exc, InvalidInput) else []
    status = exc.status if exc.status in TITLES else 400
    return error_page(request, status, errors, headers)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    # Path and query parameters that do not parse (an id that is no UUID) are "not found":
    # like the API, a made-up address tells nothing.
    status = 404 if exc.status_code == 400 else exc.status_code
    return error_page(request, status)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if database_unavailable(exc):
        log.warning("database unavailable (%s) on %s", type(exc).__name__, request.url.path)
        return error_page(request, 503, headers=retry_after_headers())
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_page(request, 500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SignInRequired: _sign_in_required,
    AccountSetupRequired: _setup_required,
    CsrfRefused: _csrf,
    DomainError: _domain,
    HTTPException: _http,
    Exception: _unexpected,
}
