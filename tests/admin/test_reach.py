"""Every new route against every role (acceptance 5): 403 for actions a role never has,
404 outside reach, each refusal audited, nothing changed by a refused request."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.admin.helpers import csv_body, roster_rows

ROLES = ("ct_a1", "teacher_a", "counselor_a", "leader_a", "admin", "auditor")


def routes(world: Any) -> list[tuple[str, str, Any, dict[str, int]]]:
    """(method, path, body, expected status per role); a role not named expects 403."""
    a, b = world.school_a, world.school_b
    staff = {"ct_a1": 200, "teacher_a": 200, "counselor_a": 200, "leader_a": 200, "admin": 200}
    some_user = world["teacher_a"].id
    return [
        ("GET", "/api/v1/schools", None, staff),
        ("GET", f"/api/v1/schools/{a}/classes", None, staff),
        ("GET", f"/api/v1/schools/{b}/classes", None, {**dict.fromkeys(staff, 404), "admin": 200}),
        (
            "POST",
            "/api/v1/schools",
            {"name": "N", "code": f"C{uuid.uuid4().hex[:6]}"},
            {"admin": 201},
        ),
        (
            "POST",
            f"/api/v1/schools/{a}/classes",
            {"name": f"班{uuid.uuid4().hex[:4]}", "grade": 7, "school_year": "2026-2027"},
            {"leader_a": 201, "admin": 201},
        ),
        (
            "POST",
            f"/api/v1/schools/{b}/classes",
            {"name": "B班", "grade": 7, "school_year": "2026-2027"},
            {"leader_a": 404, "admin": 201},
        ),
        ("GET", "/api/v1/users", None, {"leader_a": 200, "admin": 200}),
        ("GET", f"/api/v1/users?school_id={b}", None, {"leader_a": 404, "admin": 200}),
        (
            "POST",
            "/api/v1/users",
            {"username": "x.bureau", "display_name": "X", "roles": [{"role": "bureau_admin"}]},
            {"leader_a": 403, "admin": 201},
        ),
        (
            "POST",
            "/api/v1/users",
            {"username": "x.auditor", "display_name": "X", "roles": [{"role": "auditor"}]},
            {"leader_a": 403, "admin": 201},
        ),
        (
            "POST",
            "/api/v1/users",
            {
                "username": "x.leader",
                "display_name": "X",
                "roles": [{"role": "school_leader", "school_id": str(a)}],
            },
            {"leader_a": 403, "admin": 201},
        ),
        (
            "POST",
            "/api/v1/users",
            {
                "username": "x.teacher.b",
                "display_name": "X",
                "roles": [{"role": "teacher", "school_id": str(b)}],
            },
            {"leader_a": 404, "admin": 201},
        ),
        (
            "POST",
            f"/api/v1/users/{world['ct_b1'].id}/reset-password",
            None,
            {"leader_a": 404, "admin": 200},
        ),
        (
            "POST",
            f"/api/v1/users/{world['admin'].id}/disable",
            None,
            {"leader_a": 404, "admin": 422},
        ),
        (
            "POST",
            f"/api/v1/classes/{world.class_a2}/teachers",
            {"user_id": str(some_user)},
            {"leader_a": 204, "admin": 204},
        ),
        (
            "POST",
            f"/api/v1/classes/{world.class_b1}/teachers",
            {"user_id": str(some_user)},
            {"leader_a": 404, "admin": 204},
        ),
        (
            "POST",
            f"/api/v1/schools/{a}/rollover",
            {"to_school_year": "2027-2028", "dry_run": True},
            {"leader_a": 200},
        ),
        (
            "POST",
            f"/api/v1/schools/{b}/rollover",
            {"to_school_year": "2027-2028", "dry_run": True},
            {"leader_a": 404},
        ),
        ("GET", "/api/v1/students/transfers", None, {"leader_a": 200}),
        (
            "POST",
            "/api/v1/students/transfers",
            {"national_id": "110105201301010012", "to_class_id": str(world.class_a1)},
            {"leader_a": 202},
        ),
        (
            "POST",
            "/api/v1/students/transfers",
            {"national_id": "110105201301010012", "to_class_id": str(world.class_b1)},
            {"leader_a": 404},
        ),
        ("POST", f"/api/v1/students/transfers/{uuid.uuid4()}/approve", None, {"leader_a": 404}),
        ("POST", f"/api/v1/students/transfers/{uuid.uuid4()}/decline", None, {"leader_a": 404}),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_each_role_as_the_policy_says(client, world, db, role):
    account = world[role]
    for method, path, body, expected in routes(world):
        want = expected.get(role, 403)
        before = db.execute("SELECT count(*) FROM audit_events WHERE outcome = 'deny'")[0][0]
        response = client.request(method, path, json=body, headers=account.headers)
        assert response.status_code == want, (role, method, path, response.text)
        denied = db.execute("SELECT count(*) FROM audit_events WHERE outcome = 'deny'")[0][0]
        if want in (403, 404):
            assert denied == before + 1, (role, method, path)
    # The import takes a file, not JSON.
    upload = client.post(
        f"/api/v1/schools/{world.school_a}/students/import",
        content=csv_body(roster_rows(["七年级1班"], 1, first=3000)),
        headers={**account.headers, "Content-Type": "text/csv"},
    )
    assert upload.status_code == (200 if role == "leader_a" else 403), (role, upload.text)
