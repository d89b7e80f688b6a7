"""Hostile bodies on every route that takes one, found in the app's route table (SPEC §7).

For each POST, PUT and PATCH route, API and pages alike, whatever it declares to take:
a body one byte over its limit (413), a media type it does not take (415), JSON nested
deeper than 32 levels (400) and text that is not UTF-8 (422, or GB18030 where a table
may be that). Every refusal is a problem document, or for a page its error page, never
a server error, and changes nothing. A new route is covered the day it is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.db import Base
from casemgr.guards import BODY_METHODS, JSON, MAX_JSON_DEPTH, accepted_types
from casemgr.tabular import CSV, XLSX
from tests.access.scene import Scene
from tests.hostile.fuzzing import fill, real_path_parameters
from tests.web.helpers import csrf_of, sign_in

FORM = "application/x-www-form-urlencoded"
PROBLEM = "application/problem+json"
# Tables whose rows a refused request may add: the trail of the refusal itself, and the
# attempt counters and token uses every request touches.
TRAIL = ("audit_", "login_throttle", "auth_tokens")
# Who sends: a role that may use upload routes (a refused upload must be refused for its
# body, not for its sender); the rest are refused before any handler runs.
SENDERS = {"/students/import": "leader_a", "/results": "counselor_a"}


@dataclass(frozen=True)
class BodyRoute:
    method: str
    path: str  # the path format, e.g. /api/v1/cases/{case_id}
    handler: HTTPRouteHandler

    @property
    def types(self) -> tuple[str, ...]:
        return accepted_types(self.handler)

    @property
    def api(self) -> bool:
        return self.path.startswith("/api/")

    @property
    def limit(self) -> int:
        limit = self.handler.resolve_request_max_body_size()
        assert limit, self
        return limit

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def body_routes(app: Any) -> list[BodyRoute]:
    """Every route that reads a body, as the input guard decides it (``casemgr.guards``)."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods & BODY_METHODS):
                found.append(BodyRoute(method, route.path_format, handler))
    return found


def url(route: BodyRoute, scene: Scene) -> str:
    return fill(route.path, real_path_parameters(scene, "leader_a"))


def row_counts(db: Any) -> dict[str, int]:
    async def body(session: AsyncSession) -> dict[str, int]:
        counts = {}
        for table in Base.metadata.sorted_tables:
            if not table.name.startswith(TRAIL):
                counts[table.name] = int(
                    await session.scalar(select(func.count()).select_from(table)) or 0
                )
        return counts

    return db.in_transaction(body)


class Sender:
    """Sends to API routes with a bearer token and to pages from a signed-in browser."""

    def __init__(self, client: Any, scene: Scene) -> None:
        self.client = client
        self.scene = scene
        sign_in(client, scene.world["ct_a1"])
        self.csrf = csrf_of(client.get("/account").text)

    def send(self, route: BodyRoute, content: bytes, media_type: str) -> Any:
        headers = {"content-type": media_type}
        if media_type == "multipart/form-data":
            headers["content-type"] += "; boundary=hostile-boundary"
        if route.api:
            sender = next((who for end, who in SENDERS.items() if route.path.endswith(end)), None)
            headers.update(self.scene.world[sender or "counselor_a"].headers)
        return self.client.request(
            route.method,
            url(route, self.scene),
            content=content,
            headers=headers,
            follow_redirects=False,
        )

    def form_body(self, fields: bytes) -> bytes:
        return b"csrf_token=" + self.csrf.encode() + b"&" + fields


def refused(response: Any, status: int, route: BodyRoute) -> None:
    assert response.status_code == status, (str(route), response.status_code, response.text[:300])
    media_type = response.headers["content-type"].split(";")[0]
    if route.api or media_type != "text/html":
        assert media_type == PROBLEM, (str(route), media_type)
        assert response.json()["status"] == status
    else:  # a page answers with its error page
        assert "Traceback" not in response.text


@pytest.fixture
def routes(app: Any) -> list[BodyRoute]:
    found = body_routes(app)
    api = [r for r in found if r.api]
    pages = [r for r in found if not r.api]
    # The whole table, not a fraction of it: JSON, uploads and forms.
    assert len(api) > 35 and len(pages) > 20, (len(api), len(pages))
    assert {CSV, XLSX} <= {t for r in api for t in r.types}
    assert {FORM} <= {t for r in pages for t in r.types}
    return found


def test_a_body_over_the_limit_is_413(client, scene, db, routes):
    sender = Sender(client, scene)
    before = row_counts(db)
    for route in routes:
        media_type = route.types[0]
        response = sender.send(route, b"x" * (route.limit + 1), media_type)
        refused(response, 413, route)
    assert row_counts(db) == before


def test_a_media_type_the_route_does_not_take_is_415(client, scene, db, routes):
    sender = Sender(client, scene)
    before = row_counts(db)
    for route in routes:
        for media_type in ("text/plain", "application/xml", JSON, CSV, FORM):
            if media_type in route.types:
                continue
            refused(sender.send(route, b"a,b\n1,2\n", media_type), 415, route)
    assert row_counts(db) == before


def test_json_nested_too_deep_is_400_before_parsing(client, scene, db, routes):
    sender = Sender(client, scene)
    before = row_counts(db)
    checked = 0
    for route in routes:
        if JSON not in route.types:
            continue
        for depth in (MAX_JSON_DEPTH + 1, 100_000):
            body = b'{"a":' * depth + b"1" + b"}" * depth
            refused(sender.send(route, body, JSON), 400, route)
        checked += 1
    assert checked > 35
    assert row_counts(db) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"full_name": "\xff\xfe"}',  # not UTF-8 at all
        b'{"notes": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"reason": "\xc0\xaf"}',  # an overlong encoding of "/"
        b'{"text": "caf\xe9"}',  # Latin-1
    ],
)
def test_json_that_is_not_utf8_is_422_naming_the_body(client, scene, db, routes, raw):
    sender = Sender(client, scene)
    before = row_counts(db)
    for route in routes:
        if JSON not in route.types:
            continue
        response = sender.send(route, raw, JSON)
        refused(response, 422, route)
        assert response.json()["errors"] == [
            {"field": "body", "message": "must be well-formed JSON encoded as UTF-8"}
        ], str(route)
    assert row_counts(db) == before


def test_tables_in_no_readable_encoding_are_422_and_store_nothing(client, scene, db, routes):
    sender = Sender(client, scene)
    before = row_counts(db)
    uploads = [r for r in routes if CSV in r.types]
    assert len(uploads) >= 2
    # 0xFF is neither UTF-8 nor GB18030; 0x80 alone is not GB18030 either.
    for body in (b"student_no,full_name\r\n\xff\xff,\x80\r\n", b"\xff" * 64):
        for route in uploads:
            response = sender.send(route, body, CSV)
            refused(response, 422, route)
        for route in uploads:
            response = sender.send(route, body, XLSX)
            refused(response, 422, route)
    assert row_counts(db) == before


def test_forms_with_bytes_that_are_not_utf8_are_refused_not_failed(client, scene, db, routes):
    sender = Sender(client, scene)
    before = row_counts(db)
    forms = [r for r in routes if FORM in r.types]
    for fields in (b"notes=%FF%FE&reason=%C0%AF", b"notes=\xff\xfe&kind=\xed\xa0\x80"):
        for route in forms:
            response = sender.send(route, sender.form_body(fields), FORM)
            assert response.status_code < 500, (str(route), response.status_code)
            assert "Traceback" not in response.text
            assert "\ufffd" not in response.text, str(route)
    assert row_counts(db) == before
