"""``/schema/openapi.json``: the document Litestar derives, completed with what it cannot see.

Litestar builds each operation from its handler's signature. Three things of this service
live elsewhere, so the served document adds them, here and nowhere else:

- **Errors.** Every error leaves as an RFC 9457 problem document (``casemgr.problems``),
  never in Litestar's own error shape: each API operation documents its problem answers
  (401 and 403 when it needs a token, 404 when it names a record in its path, 400, 413 and
  415 when it takes a body, 422 when it takes any input) and ``4XX`` for the rest (409
  conflicts, 429 throttling), all as :data:`PROBLEM`.
- **Uploads.** The roster and screening imports read their body as a stream
  (``casemgr.tabular.spool``), so no signature names it: their request body is documented
  from the media types the route declares to ``casemgr.guards``.
- **Public operations.** The document requires a bearer token everywhere; the operations
  that need none (``exclude_from_auth``) say so with an empty ``security``.

``tests/hostile/test_api_fuzz.py`` holds every answer of the API to this document.
"""

from __future__ import annotations

import copy
from typing import Any

from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute

from casemgr.guards import BODY_METHODS, CONTENT_TYPES, accepted_types
from casemgr.problems import PROBLEM

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; never a value that was sent, never internals.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Input errors, each naming a field (by path) and the rule broken.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_REF = {"$ref": "#/components/schemas/Problem"}

_DESCRIPTIONS = {
    "400": "The request is malformed (JSON nested too deep, a bad Content-Length).",
    "401": "No valid bearer token (missing, expired, revoked, or the account is disabled).",
    "403": "The caller's roles never allow this, or the token may only finish onboarding.",
    "404": "No such record within the caller's reach (whether or not it exists).",
    "413": "The body is larger than the route takes.",
    "415": "The body's media type is not one the route takes.",
    "422": "Invalid input: each error names its field; nothing was changed.",
    "4XX": "Any other refusal (a conflict, too many attempts): a problem document.",
}


def _problem(status: str) -> dict[str, Any]:
    return {"description": _DESCRIPTIONS[status], "content": {PROBLEM: {"schema": _REF}}}


def _takes_body(method: str, handler: HTTPRouteHandler) -> bool:
    return method in BODY_METHODS and bool(
        handler.opt.get(CONTENT_TYPES) or "data" in handler.parsed_fn_signature.parameters
    )


def _complete_operation(
    operation: dict[str, Any], method: str, path: str, handler: HTTPRouteHandler
) -> None:
    public = bool(handler.opt.get("exclude_from_auth"))
    if public:
        operation["security"] = []
    body = _takes_body(method, handler)
    declared = handler.opt.get(CONTENT_TYPES)
    if body and declared and "requestBody" not in operation:
        operation["requestBody"] = {
            "required": True,
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in accepted_types(handler)
            },
        }
    responses: dict[str, Any] = operation.setdefault("responses", {})
    # Litestar documents its own error shape under 400; this service never answers with it.
    responses.pop("400", None)
    statuses = ["4XX"]
    if not public:
        statuses += ["401", "403"]
    if "{" in path:
        statuses.append("404")
    if body:
        statuses += ["400", "413", "415"]
    if body or operation.get("parameters"):
        statuses.append("422")
    for status in sorted(statuses):
        responses.setdefault(status, _problem(status))


def complete_document(document: dict[str, Any], app: Litestar) -> dict[str, Any]:
    """A copy of Litestar's ``document`` with the additions the module docstring lists."""
    document = copy.deepcopy(document)
    document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, Any] = document.get("paths", {})
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                operation = paths[route.path_format].get(method.lower())
                if operation is not None and handler.include_in_schema is not False:
                    _complete_operation(operation, method, route.path_format, handler)
    return document


class ContractDocument(JsonRenderPlugin):
    """Serves the completed document as JSON, built once per application."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            self._rendered = self.render_json(
                request, complete_document(openapi_schema, request.app)
            )
        return self._rendered
