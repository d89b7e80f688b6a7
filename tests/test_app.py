"""Service-wide behaviour: health, OpenAPI, security headers, problem documents."""

from __future__ import annotations

import re
import uuid


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_lists_the_contract_routes(client):
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/health",
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
        "/api/v1/students",
        "/api/v1/students/{student_id}",
        "/api/v1/students/lookup",
        "/api/v1/classes/{class_id}/students",
        "/api/v1/audit/events",
        "/api/v1/audit/verify",
    ):
        assert path in paths, path


def test_every_response_carries_the_security_headers(client, world):
    for response in (
        client.get("/health"),
        client.get(f"/api/v1/students/{uuid.uuid4()}", headers=world["ct_a1"].headers),
        client.get("/no-such-page"),
    ):
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_api_responses_are_never_cached(client, world):
    response = client.get(
        f"/api/v1/classes/{world.class_a1}/students", headers=world["ct_a1"].headers
    )
    assert response.headers["cache-control"] == "no-store"


def test_unknown_route_is_a_problem_document(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404


def test_unexpected_failure_is_a_500_problem_without_internals(client, world, db, monkeypatch):
    from casemgr.students import services

    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internal detail 测试学生001")

    monkeypatch.setattr(services, "details", broken)
    response = client.get(
        f"/api/v1/students/{world.students['a1_first']}", headers=world["ct_a1"].headers
    )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "secret internal detail" not in response.text
    assert "测试学生001" not in response.text


def test_openapi_declares_bearer_authentication(client):
    document = client.get("/schema/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert {"bearer": []} in document["security"]


# Issue 5, finding 11: the documentation pages Litestar offers load scripts from a CDN,
# which the service's CSP blocks (blank pages) and SPEC §7 forbids.
SCHEMA_PAGES = (
    "/schema/swagger",
    "/schema/redoc",
    "/schema/elements",
    "/schema/rapidoc",
    "/schema/scalar",
    "/schema/openapi.yaml",
    "/schema/oauth2-redirect.html",
)
EXTERNAL_REFERENCE = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


def test_only_the_openapi_document_is_served_and_nothing_refers_to_another_host(client):
    document = client.get("/schema/openapi.json")
    assert document.status_code == 200
    assert document.json()["openapi"].startswith("3.")
    assert not EXTERNAL_REFERENCE.search(document.text)
    for path in SCHEMA_PAGES:
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json"), path
        assert not EXTERNAL_REFERENCE.search(response.text), path
        assert "script-src 'self'" in response.headers["content-security-policy"]


# Issue 5, finding 12.
def test_hsts_is_sent_over_https_only(app):
    from litestar.testing import TestClient

    hsts = "max-age=31536000; includeSubDomains"
    with TestClient(app, base_url="https://testserver.local") as over_tls:
        for path in ("/health", "/api/v1/nothing-here", "/schema/openapi.json"):
            assert over_tls.get(path).headers["strict-transport-security"] == hsts, path
    with TestClient(app) as plain:
        for path in ("/health", "/api/v1/nothing-here"):
            assert "strict-transport-security" not in plain.get(path).headers, path
