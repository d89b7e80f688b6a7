"""The access matrix: every API route x every role x a record inside and outside reach
(and one under emergency access), compared with ``matrix.py`` (SPEC §3).

No cell may leak: an allowed request succeeds, a refused one answers exactly 403 or 404
as a problem document and leaves one denial in the audit trail, and no answer to a
caller of school A carries an id, code or text of school B (nor, to a bureau admin or an
auditor, any student's content). A route of the app without a rule fails the test.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import asyncpg
from litestar.routes import HTTPRoute
from sqlalchemy.engine import make_url

from tests.access.matrix import (
    ALLOW,
    PUBLIC,
    RULES,
    TARGETS,
    expected,
)
from tests.access.requests import LATE, Cell, Fresh, builders
from tests.access.scene import MARKER, student_values

# The service's own routes beside the API: probes and metrics.
SERVICE_PATHS = ("/api/", "/health", "/ready", "/metrics")
# Refused by the monitoring gate, not by a decision about a record: not in the audit trail.
NOT_AUDITED = {"GET /metrics"}
SCHOOL_A_ROLES = ("ct_a1", "teacher_a", "counselor_a", "leader_a")
ROLES = (*SCHOOL_A_ROLES, "admin", "auditor")
DENIALS = (
    "SELECT count(*) FROM audit_events WHERE outcome = 'deny'"
    " AND (detail LIKE '%403%' OR detail LIKE '%404%')"
)
# Answers that name school B by nature: approving a transfer names the receiving class.
NAMES_THE_OTHER_SCHOOL = {"POST /api/v1/students/transfers/{transfer_id}/approve"}


def api_routes(app: Any) -> set[str]:
    """Every route of the service's API, from the app's own table."""
    found = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith(SERVICE_PATHS):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods - {"OPTIONS", "HEAD"}:
                found.add(f"{method} {route.path_format}")
    return found


def test_every_route_has_a_rule_and_a_request(app):
    routes = api_routes(app)
    requests = builders(Fresh(None, None, None))  # type: ignore[arg-type]  # not called
    assert routes - set(RULES) == set(), "routes without a rule in tests/access/matrix.py"
    assert set(RULES) - routes == set(), "rules for routes the app no longer has"
    assert set(requests) == set(RULES)


class Denials:
    """Counts the denials (403, 404) in the audit trail over one connection, kept open for
    the whole matrix (a fresh engine per count would cost more than the requests)."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.loop = asyncio.new_event_loop()
        if url.get_backend_name() == "sqlite":
            self.sqlite: sqlite3.Connection | None = sqlite3.connect(str(url.database))
            self.pg: Any = None
        else:
            self.sqlite = None
            dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
            self.pg = self.loop.run_until_complete(asyncpg.connect(dsn))

    def count(self) -> int:
        if self.sqlite is not None:
            return int(self.sqlite.execute(DENIALS).fetchone()[0])
        return int(self.loop.run_until_complete(self.pg.fetchval(DENIALS)))

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
        else:
            self.loop.run_until_complete(self.pg.close())
        self.loop.close()


def _order(routes: list[str]) -> list[str]:
    return [r for r in routes if r not in LATE] + [r for r in LATE if r in routes]


def test_no_cell_leaks(app, client, db, scene):
    denials = Denials(db.settings.database_url)
    try:
        _send_every_cell(client, db, scene, denials)
    finally:
        denials.close()


def _send_every_cell(client: Any, db: Any, scene: Any, audited: Denials) -> None:
    requests = builders(Fresh(client, db, scene))
    world = scene.world
    other_school = scene.other_school_values()
    content = {MARKER, *(v for n in (1, 2, 3, 4, 5) for v in student_values(n))}
    wrong: list[str] = []
    cells = 0
    for route in _order(sorted(RULES)):
        build, ok = requests[route]
        denials_before = audited.count()
        denied = 0
        for role in ROLES:
            for target in TARGETS[RULES[route].names]:
                cell = Cell(scene, role, target)
                request = build(cell)
                headers = dict(request.headers)
                if RULES[route].names != PUBLIC:
                    headers.update(world[role].headers)
                response = client.request(
                    request.method,
                    request.path,
                    json=request.json,
                    content=request.content,
                    headers=headers,
                )
                cells += 1
                want = expected(route, role, target)
                got = response.status_code
                where = f"{route} as {role} at {target}"
                if want == ALLOW:
                    if got not in ok:
                        wrong.append(
                            f"{where}: {got}, expected one of {sorted(ok)}: {response.text[:160]}"
                        )
                else:
                    denied += 1
                    if got != want:
                        wrong.append(f"{where}: {got}, expected {want}: {response.text[:160]}")
                    elif not response.headers["content-type"].startswith(
                        "application/problem+json"
                    ):
                        wrong.append(f"{where}: a refusal that is not a problem document")
                text = response.text
                leaked = other_school if role in SCHOOL_A_ROLES else content
                if route in NAMES_THE_OTHER_SCHOOL:
                    leaked = leaked - {str(world.school_b), str(world.class_b1)}
                # A roster seen through an emergency grant: the granted student, no classmate.
                if (
                    target == "neighbour"
                    and route.startswith("GET /api/v1/classes/")
                    and role in ("ct_a1", "teacher_a")
                    and "测试学生003" in text
                ):
                    wrong.append(f"{where}: a classmate of the granted student is listed")
                shown = [v for v in leaked if v in text or json.dumps(v)[1:-1] in text]
                if shown and not (role not in SCHOOL_A_ROLES and got >= 400):
                    wrong.append(
                        f"{where}: {got} shows {len(shown)} value(s) out of reach: {shown[:3]}"
                    )
        denials = audited.count() - denials_before
        if denials != (0 if route in NOT_AUDITED else denied):
            wrong.append(f"{route}: {denied} refusals, {denials} denials audited")
    assert cells > 800
    assert not wrong, f"{len(wrong)} wrong cells:\n" + "\n".join(wrong)
