"""Every error leaves as an RFC 9457 problem document, with nothing sensitive in it."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

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


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
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
