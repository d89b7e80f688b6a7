"""Every error leaves as an RFC 9457 problem document, with nothing sensitive in it."""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import exc as sa_exc

from casemgr.db import WriterTimeout
from casemgr.errors import DomainError, TooManyAttempts, Unauthenticated

log = logging.getLogger("casemgr")
PROBLEM = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(
        body,
        status_code=status,
        media_type=PROBLEM,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


class RequestRefused(HTTPException):
    """An input rule refused the request before its handler ran (``casemgr.guards``).

    Answered with its own status and title; unlike Litestar's own 400s it is not an input
    error of a field, so it is never turned into a 422.
    """

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail=detail, status_code=status)
        self.title = title


def domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    headers = {}
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="casemgr"'
    return problem(exc.status, exc.title, exc.detail, headers, **exc.extra)


# Decoders quote offending values in some messages ("Invalid enum value 'x'"); input may
# be personal data, so the value is cut out and only the rule stays.
_QUOTED_VALUE = re.compile(r"\bvalue '(?:[^'\\]|\\.)*'")


def _without_values(message: str) -> str:
    return _QUOTED_VALUE.sub("value", message)


def validation_error(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {
                    "field": str(item.get("key") or item.get("source") or "body"),
                    "message": _without_values(str(item.get("message", "invalid"))),
                }
            )
    if not errors:
        errors.append({"field": "body", "message": _without_values(str(exc.detail))})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "Invalid input", detail, errors=errors)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    title = "Bad request" if status == 400 else exc.detail
    detail = _without_values(str(exc.detail)) if status < 500 else None
    if status == 400:
        # Litestar reports unparseable bodies and parameters as 400; they are input errors.
        return problem(422, "Invalid input", detail, errors=[{"field": "body", "message": detail}])
    return problem(status, title, detail, exc.headers)


def refused(_: Request[Any, Any, Any], exc: RequestRefused) -> Response[dict[str, Any]]:
    return problem(exc.status_code, exc.title, exc.detail)


# -- the database out of reach: 503 with Retry-After, never 500 ---------------------------
#
# While the database restarts, fails over or is saturated, a request fails for reasons that
# pass by themselves: the connection drops mid-request (the pool then discards it, and
# ``pool_pre_ping`` replaces stale ones at checkout), a new one is refused, the server
# says it is starting up or shutting down, the pool has no connection to spare within its
# timeout, or SQLite's write lock stayed taken past its patience. Such a request answers
# 503 with Retry-After, so that clients and load balancers retry instead of reporting a
# fault. Whether it changed anything is not known (the connection may have dropped while
# COMMIT was on its way), so the answer does not say.

RETRY_AFTER_SECONDS = 2
# PostgreSQL SQLSTATEs of a server going away or not accepting work yet; all of class 08
# (connection exceptions) counts too. 57P01 admin shutdown, 57P02 crash shutdown, 57P03
# cannot connect now (starting up, shutting down, in recovery), 53300 too many connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# SQLite's SQLITE_BUSY and SQLITE_LOCKED, after its busy timeout has run out.
_SQLITE_LOCKED = ("database is locked", "database table is locked")


def _driver_error_unavailable(error: BaseException | None) -> bool:
    if error is None:
        return False
    if isinstance(error, ConnectionError):  # refused, reset, broken pipe
        return True
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(sqlstate, str) and (
        sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    ):
        return True
    if isinstance(error, sqlite3.OperationalError):
        return str(error).startswith(_SQLITE_LOCKED)
    # asyncpg's own "connection is closed" (used after the server dropped it); the
    # message is matched, never shown.
    return type(error).__name__ == "InterfaceError" and "connection is closed" in str(error)


def _one_unavailable(error: BaseException) -> bool:
    if isinstance(error, WriterTimeout | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # SQLite writer queue, pool checkout timeout, pre-ping disconnect
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        orig = error.orig
        return _driver_error_unavailable(orig) or (
            orig is not None and _driver_error_unavailable(orig.__cause__)
        )
    return _driver_error_unavailable(error) or _driver_error_unavailable(error.__cause__)


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means that the database cannot be reached (or stayed locked) now.

    An exception group (Litestar gathers a dependency's cleanup failures in one) counts
    when what it was raised from counts, or when every exception in it does.
    """
    if isinstance(error, BaseExceptionGroup):
        cause = error.__cause__
        if cause is not None and database_unavailable(cause):
            return True
        return all(database_unavailable(member) for member in error.exceptions)
    return _one_unavailable(error)


def retry_after_headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def service_unavailable(detail: str) -> Response[dict[str, Any]]:
    return problem(
        HTTP_503_SERVICE_UNAVAILABLE, "Service unavailable", detail, retry_after_headers()
    )


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if database_unavailable(exc):
        log.warning(
            "database unavailable (%s) on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
        )
        return service_unavailable("The database cannot be reached right now. Try again shortly.")
    # Log the type and where, never the message: messages of lower layers may hold values.
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR, "Internal error", "The request failed and changed nothing."
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: domain_error,
    ValidationException: validation_error,
    RequestRefused: refused,
    HTTPException: http_error,
    Exception: unexpected_error,
}
