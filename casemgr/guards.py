"""Input rules every request body passes before any handler sees it (SPEC §7).

One middleware, after routing (so it knows the route's declarations), in this order:

1. **Content type.** A route takes ``application/json`` unless it declares otherwise in
   its handler's ``opt``::

       @post("/import", opt={CONTENT_TYPES: ("text/csv", XLSX)},
             request_max_body_size=UPLOAD_MAX_BODY_BYTES)

   Any other type is refused with 415, ``text/plain`` included (browsers send it across
   sites without asking first). JSON must be UTF-8. Requests without a body pass, and so
   do bodies sent with GET, HEAD, DELETE or OPTIONS to handlers that declare no type and
   read no ``data``: nothing reads them.
2. **Size.** Litestar's own ``request_max_body_size`` is the limit: 1 MiB for the whole
   service (:data:`JSON_MAX_BODY_BYTES`, set in ``casemgr.app``); an upload route raises
   its own. A larger JSON body is refused (413) before it is decoded; Litestar refuses
   larger uploads itself while they are read.
3. **Depth.** JSON nested deeper than :data:`MAX_JSON_DEPTH` is refused (400) after a
   linear scan of the bytes, before any recursive parser runs.
4. **Well-formed and text rule.** The body is decoded once; malformed JSON or bad UTF-8
   is a 422 on ``body``, and every string and object key must pass
   ``casemgr.validation`` (422 naming each field by path, never echoing the value).

The body read here is replayed to the handler unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, cast

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPReceiveMessage, HTTPRequestEvent, Receive, Scope, Send

from casemgr.errors import InvalidInput
from casemgr.problems import RequestRefused
from casemgr.validation import document_problems

CONTENT_TYPES = "content_types"
"""The handler ``opt`` key naming the media types a route takes (default: JSON only)."""

JSON = "application/json"
JSON_MAX_BODY_BYTES = 1024 * 1024
UPLOAD_MAX_BODY_BYTES = 20 * 1024 * 1024
"""What upload routes (roster and screening imports) pass as ``request_max_body_size``."""

MAX_JSON_DEPTH = 32
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UTF8 = frozenset({"utf-8", "utf8"})

# A JSON string: its brackets are text, not structure. Possessive, and an unterminated
# string runs to the end, so that each byte is looked at once whatever the input.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays and objects more than ``limit`` levels deep."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def accepted_types(handler: HTTPRouteHandler) -> tuple[str, ...]:
    declared: Sequence[str] | None = handler.opt.get(CONTENT_TYPES)
    return tuple(t.lower() for t in declared) if declared else (JSON,)


class InputGuard(ASGIMiddleware):
    """The rules above, for every HTTP route of the application."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        handler = scope.get("route_handler")
        if not isinstance(handler, HTTPRouteHandler) or not _reads_body(scope, handler):
            await next_app(scope, receive, send)
            return
        request: Request[Any, Any, Any] = Request(scope)
        announced = _content_length(request)
        if announced == 0 or (announced is None and "transfer-encoding" not in request.headers):
            await next_app(scope, receive, send)
            return
        media_type, options = request.content_type
        accepted = accepted_types(handler)
        if media_type not in accepted:
            raise RequestRefused(
                415, "Unsupported media type", f"This route takes {', '.join(accepted)}."
            )
        if media_type != JSON:
            await next_app(scope, receive, send)
            return
        if options.get("charset", "utf-8").lower() not in UTF8:
            raise RequestRefused(415, "Unsupported media type", "JSON must be encoded as UTF-8.")
        body = await _read_body(receive, handler.resolve_request_max_body_size(), announced)
        _check_json(body)
        await next_app(scope, _replay(body, receive), send)


def _reads_body(scope: Scope, handler: HTTPRouteHandler) -> bool:
    return (
        scope.get("method") in BODY_METHODS
        or bool(handler.opt.get(CONTENT_TYPES))
        or "data" in handler.parsed_fn_signature.parameters
    )


def _content_length(request: Request[Any, Any, Any]) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise RequestRefused(400, "Bad request", "Content-Length must be a number of bytes.")
    return int(raw)


def _too_large(limit: int) -> RequestRefused:
    return RequestRefused(413, "Content too large", f"The body may be at most {limit} bytes.")


async def _read_body(receive: Receive, limit: int | None, announced: int | None) -> bytes:
    if limit is not None and announced is not None and announced > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = cast("HTTPReceiveMessage", await receive())
        if message["type"] == "http.disconnect":
            raise RequestRefused(400, "Bad request", "The body ended early.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check_json(body: bytes) -> None:
    if json_depth_exceeds(body):
        raise RequestRefused(
            400, "Bad request", f"JSON may nest arrays and objects at most {MAX_JSON_DEPTH} deep."
        )
    try:
        document = msgspec.json.decode(body)
    except msgspec.ValidationError:
        raise InvalidInput.field("body", "holds a number out of range") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise InvalidInput.field("body", "must be well-formed JSON encoded as UTF-8") from None
    errors = document_problems(document)
    if errors:
        raise InvalidInput(errors)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the body read here to the application, then defers."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            event: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
            return event
        return await receive()

    return replay
