"""The pages against the same matrix: a page about a record follows the API route that
reads or changes it (``PAGES``), from a signed-in browser of each role, at each target.

Pages answer like the API (200, or 403 / 404 as an error page); a form about a record of
another school answers exactly as one about no record at all; nothing of school B ever
shows to a caller of school A. Landing pages (no record in their address) are pinned per
role in ``tests/web/test_security.py``. A page route of the app not listed here fails.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.routes import HTTPRoute

from tests.access.matrix import ALLOW, TARGETS, expected
from tests.access.requests import Cell, Fresh
from tests.access.scene import Scene
from tests.access.test_matrix import ROLES, SCHOOL_A_ROLES, SERVICE_PATHS
from tests.web.helpers import csrf_of, sign_in

LANDING = "a landing or self-service page (tests/web/test_security.py)"
# page route -> the API route whose rule it follows, or why it has none.
PAGES: dict[str, str] = {
    "GET /": LANDING,
    "POST /sign-in": LANDING,
    "POST /sign-out": LANDING,
    "POST /language": LANDING,
    "GET /home": LANDING,
    "GET /account": LANDING,
    "POST /account/password": LANDING,
    "POST /account/totp": LANDING,
    "POST /account/totp/confirm": LANDING,
    "GET /account/done": LANDING,
    "POST /account/sessions/{session_id}/end": "DELETE /api/v1/me/sessions/{session_id}",
    "GET /my": LANDING,
    "POST /my/support-logs": LANDING,
    "POST /my/home-visits": LANDING,
    "GET /cases": LANDING,
    "GET /cases/{case_id}": "GET /api/v1/cases/{case_id}",
    "POST /cases/{case_id}/support-logs": "POST /api/v1/cases/{case_id}/support-logs",
    "POST /cases/{case_id}/guidance": "POST /api/v1/cases/{case_id}/guidance",
    "POST /cases/{case_id}/export.pdf": "GET /api/v1/cases/{case_id}",
    "POST /cases/{case_id}/counseling-notes": "POST /api/v1/students/{student_id}/counseling-notes",
    "POST /cases/{case_id}/close": "POST /api/v1/cases/{case_id}/close",
    "POST /care-categories/{category_id}/end": "POST /api/v1/care-categories/{category_id}/end",
    "GET /students/{student_id}": "GET /api/v1/students/{student_id}",
    "POST /students/{student_id}/cases": "POST /api/v1/cases",
    "POST /cases/{case_id}/pairings": "POST /api/v1/cases/{case_id}/pairings",
    "POST /pairings/{pairing_id}/end": "POST /api/v1/pairings/{pairing_id}/end",
    # The request form shows nothing of the student: it answers as the request would.
    "GET /students/{student_id}/emergency-access": (
        "POST /api/v1/students/{student_id}/emergency-access"
    ),
    "POST /students/{student_id}/emergency-access": (
        "POST /api/v1/students/{student_id}/emergency-access"
    ),
    "GET /screening": LANDING,
    "GET /screening/results/{result_id}": "GET /api/v1/screening/results/{result_id}",
    "POST /screening/results/{result_id}/review": (
        "POST /api/v1/screening/results/{result_id}/review"
    ),
    "GET /screening/rounds": LANDING,
    "POST /screening/rounds": LANDING,
    "POST /screening/rounds/{round_id}/consents": (
        "POST /api/v1/screening/rounds/{round_id}/consents"
    ),
    "POST /screening/rounds/{round_id}/results": "POST /api/v1/screening/rounds/{round_id}/results",
    "GET /school": LANDING,
    "POST /school/classes": LANDING,
    "GET /school/accounts": LANDING,
    "POST /school/accounts": LANDING,
    "POST /school/accounts/{user_id}/disable": "POST /api/v1/users/{user_id}/disable",
    "POST /school/accounts/{user_id}/reset": "POST /api/v1/users/{user_id}/reset-password",
    "GET /school/import": LANDING,
    "POST /school/import": LANDING,
    "GET /school/rollover": LANDING,
    "POST /school/rollover": LANDING,
    "GET /school/transfers": "GET /api/v1/students/transfers",
    # The class asked for is in the form: tests/web/test_school_pages.py sends another
    # school's and none.
    "POST /school/transfers": "POST /api/v1/students/transfers",
    "POST /school/transfers/{transfer_id}/approve": (
        "POST /api/v1/students/transfers/{transfer_id}/approve"
    ),
    "POST /school/transfers/{transfer_id}/decline": (
        "POST /api/v1/students/transfers/{transfer_id}/decline"
    ),
    # The reader's school, or ?school_id= (tests/web/test_security.py, test_school_pages.py).
    "GET /school/visits": LANDING,
    "POST /school/visits": "PUT /api/v1/schools/{school_id}/visit-requirements",
    "GET /admin": LANDING,
    "POST /admin/schools": LANDING,
    "GET /reports/care-summary": LANDING,
    "GET /audit": LANDING,
    "GET /audit/verify": LANDING,
    "POST /audit/emergency/{grant_id}/review": LANDING,
    "POST /audit/unusual/{finding_id}/review": LANDING,
}
# Record pages that only read: sent at every target and compared with the matrix.
READ_PAGES = [p for p, api in PAGES.items() if p.startswith("GET ") and api != LANDING]


def page_routes(app: Any) -> set[str]:
    found = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith(
            (*SERVICE_PATHS, "/static", "/schema")
        ):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods - {"OPTIONS", "HEAD"}:
                found.add(f"{method} {route.path_format}")
    return found


def test_every_page_route_is_listed(app):
    routes = page_routes(app)
    assert routes - set(PAGES) == set(), "page routes without a line in tests/access/test_pages.py"
    assert set(PAGES) - routes == set(), "lines for page routes the app no longer has"


def _ids(scene: Scene, target: str) -> dict[str, str]:
    if target == "missing":
        names = (
            "case_id",
            "student_id",
            "result_id",
            "category_id",
            "round_id",
            "pairing_id",
            "transfer_id",
        )
        return {name: str(uuid.uuid4()) for name in names}
    records = scene.records[target]
    return {
        "case_id": records.case,
        "student_id": str(records.student),
        "result_id": records.result,
        "category_id": records.category,
        "round_id": records.round,
        "pairing_id": records.pairing,
        # Forms about a transfer are sent at school B's and at none (the forms test).
        "transfer_id": _transfer_of_school_b(scene) if target == "other_school" else "",
    }


def _transfer_of_school_b(scene: Scene) -> str:
    """A request for a student of school B, asked by school A: school B's leader alone
    decides it (made once per scene)."""
    if "other_school" not in scene.transfers:
        fresh = Fresh(scene.care.client, scene.care.db, scene)
        scene.transfers["other_school"] = fresh.transfer(Cell(scene, "leader_a", "other_school"))
    return scene.transfers["other_school"]


def test_record_pages_follow_the_matrix_and_leak_nothing(client, scene):
    other_school = scene.other_school_values()
    wrong = []
    for role in ROLES:
        client.cookies.clear()
        sign_in(client, scene.world[role])
        for page in READ_PAGES:
            api = PAGES[page]
            for target in TARGETS["student"]:
                path = page.split(" ", 1)[1].format(**_ids(scene, target))
                response = client.get(path, follow_redirects=False)
                want = expected(api, role, target)
                got = response.status_code
                if (want == ALLOW and got != 200) or (want != ALLOW and got != want):
                    wrong.append(f"{page} as {role} at {target}: {got}, expected {want}")
                # The page's own address (which the caller typed) may show again.
                shown = [v for v in other_school if v in response.text and v not in path]
                if role in SCHOOL_A_ROLES and shown:
                    wrong.append(f"{page} as {role} at {target}: shows school B: {shown[:3]}")
    assert not wrong, "\n".join(wrong)


def test_forms_about_another_schools_records_answer_as_about_none(client, scene):
    """An empty form (its CSRF token only) to every form about a record: whatever the
    role, a record of school B and no record at all get the same answer, and no page
    shows school B or fails."""
    forms = [p for p, api in PAGES.items() if p.startswith("POST ") and "{" in p and api != LANDING]
    assert len(forms) >= 10
    other_school = scene.other_school_values()
    wrong = []
    for role in SCHOOL_A_ROLES:
        client.cookies.clear()
        sign_in(client, scene.world[role])
        token = csrf_of(client.get("/account").text)
        for form in forms:
            answers = {}
            for target in ("other_school", "missing"):
                ids = {
                    **_ids(scene, target),
                    "session_id": str(uuid.uuid4()),
                    "user_id": str(
                        scene.world["teacher_b"].id if target != "missing" else uuid.uuid4()
                    ),
                }
                if target == "other_school":
                    ids["session_id"] = scene.sessions["ct_b1"]
                path = form.split(" ", 1)[1].format(**ids)
                response = client.post(path, data={"csrf_token": token}, follow_redirects=False)
                answers[target] = response.status_code
                if response.status_code >= 500:
                    wrong.append(f"{form} as {role} at {target}: {response.status_code}")
                if [v for v in other_school if v in response.text and v not in path]:
                    wrong.append(f"{form} as {role} at {target}: shows school B")
            if answers["other_school"] != answers["missing"]:
                other, none = answers["other_school"], answers["missing"]
                wrong.append(f"{form} as {role}: school B {other}, none {none}")
    assert not wrong, "\n".join(wrong)
