"""Every state-changing form needs the synchronizer token of the browser's own session."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from casemgr.app import create_app
from casemgr.web.sessions import CSRF_HEADER, csrf_token_for
from tests.web.helpers import csrf_of, sign_in


def web_post_paths(app: Any) -> list[str]:
    """Every POST route of the pages, with made-up ids in its path parameters."""
    paths = []
    for route in app.routes:
        if route.path.startswith(("/api", "/schema", "/static")):
            continue
        if "POST" in getattr(route, "methods", set()):
            paths.append(re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path))
    return sorted(paths)


def test_every_page_form_route_is_covered(settings):
    paths = web_post_paths(create_app(settings))
    assert "/sign-in" in paths and "/my/home-visits" in paths and len(paths) >= 15


@pytest.mark.parametrize("signed_in", [False, True])
def test_a_form_post_without_the_token_is_refused(client, world, case_a1, signed_in):
    if signed_in:
        sign_in(client, world["ct_a1"])
    else:
        client.get("/")  # a pre-session, as a browser showing the sign-in page has
    for path in web_post_paths(client.app):
        # multipart/form-data: every form route takes it (the upload takes nothing else)
        response = client.post(
            path,
            data={"notes": "x"},
            files={"file": ("roster.csv", b"class_name\n")},
            follow_redirects=False,
        )
        assert response.status_code == 403, path
        assert "表单已失效" in response.text, path


def test_a_token_of_another_session_is_refused(client, world, case_a1, db):
    """A token is tied to one session: one read from another browser does not work."""
    client.get("/")
    other_token = csrf_of(client.get("/").text)  # the pre-session's
    sign_in(client, world["ct_a1"])
    before = db.execute("SELECT count(*) FROM support_logs")[0][0]
    response = client.post(
        "/my/support-logs",
        data={
            "csrf_token": other_token,
            "case_id": str(case_a1),
            "occurred_on": "2026-11-30",
            "kind": "academic",
            "notes": "forged",
        },
    )
    assert response.status_code == 403
    forged = csrf_token_for("a-session-the-attacker-made-up-0123456789")
    response = client.post("/my/support-logs", data={"csrf_token": forged, "case_id": str(case_a1)})
    assert response.status_code == 403
    assert db.execute("SELECT count(*) FROM support_logs")[0][0] == before


def test_the_token_works_as_a_header_too(client, world):
    """HTMX requests may carry the token in a header instead of the form."""
    sign_in(client, world["ct_a1"])
    token = csrf_of(client.get("/my").text)
    response = client.post(
        "/language", data={"lang": "en", "next": "/my"}, headers={CSRF_HEADER: token}
    )
    assert response.status_code == 200
    assert '<html lang="en">' in response.text


def test_sign_in_form_needs_the_token(client, world, db):
    logins = db.execute("SELECT count(*) FROM audit_events WHERE action = 'auth:login'")[0][0]
    response = client.post(
        "/sign-in", data={"username": "ct_a1", "password": "correct horse battery staple"}
    )
    assert response.status_code == 403
    assert "casemgr_session" not in client.cookies
    after = db.execute("SELECT count(*) FROM audit_events WHERE action = 'auth:login'")[0][0]
    assert after == logins  # refused before any password was checked


def test_json_to_a_form_route_is_refused(client, world):
    sign_in(client, world["ct_a1"])
    token = csrf_of(client.get("/my").text)
    response = client.post(
        "/my/home-visits", json={"student_id": "x"}, headers={CSRF_HEADER: token}
    )
    assert response.status_code == 415
