"""Login, tokens and logout over HTTP (SPEC §6; issue 2 acceptance 7)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from casemgr.app import create_app
from casemgr.db import utcnow
from tests.accounts.helpers import LOGOUT, audit_events, expire_token, login, wrong_totp
from tests.factories import PASSWORD


def roster(client: Any, world: Any, headers: dict[str, str]) -> Any:
    return client.get(f"/api/v1/classes/{world.class_a1}/students", headers=headers)


def token_count(db: Any) -> int:
    return int(db.execute("SELECT COUNT(*) FROM auth_tokens")[0][0])


def test_class_teacher_logs_in_without_totp_and_the_token_works(client, world, db):
    r = login(client, "ct_a1")

    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "expires_at", "user"}
    assert body["user"]["id"] == str(world["ct_a1"].id)
    assert body["user"]["username"] == "ct_a1"
    assert body["user"]["roles"] == [{"role": "class_teacher", "school_id": str(world.school_a)}]
    assert datetime.fromisoformat(body["expires_at"]) > utcnow()
    # Only the token's digest is stored, never the token itself.
    stored = [bytes(row[0]) for row in db.execute("SELECT token_hash FROM auth_tokens")]
    assert hashlib.sha256(body["token"].encode()).digest() in stored
    assert not any(body["token"].encode() in s for s in stored)

    r = roster(client, world, {"Authorization": f"Bearer {body['token']}"})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 2

    logins = audit_events(db, action="auth:login", outcome="allow")
    assert [e.actor_id for e in logins] == [world["ct_a1"].id]


def test_every_failed_login_gets_the_same_401(client, world, db):
    counselor = world["counselor_a"]
    db.execute("UPDATE users SET is_active = :no WHERE username = 'teacher_a'", {"no": False})
    tokens_before = token_count(db)
    failures = {
        "wrong password": login(client, "ct_a1", "not the password at all"),
        "unknown user": login(client, "nobody-here", PASSWORD),
        "missing totp": login(client, "counselor_a", PASSWORD),
        "wrong totp": login(client, "counselor_a", PASSWORD, wrong_totp(counselor.totp_secret)),
        "deactivated account": login(client, "teacher_a", PASSWORD),
        "missing password": client.post("/api/v1/auth/login", json={"username": "ct_a1"}),
    }

    reference = failures["wrong password"]
    assert reference.status_code == 401
    assert reference.headers["content-type"] == "application/problem+json"
    assert reference.json()["status"] == 401
    for name, r in failures.items():
        assert r.status_code == 401, name
        assert r.content == reference.content, name
        assert r.headers["content-type"] == reference.headers["content-type"], name
        assert r.headers.get("cache-control") == reference.headers.get("cache-control"), name
        assert "www-authenticate" not in r.headers, name
    assert token_count(db) == tokens_before
    denied = audit_events(db, action="auth:login", outcome="deny")
    assert len(denied) == len(failures)


def test_counselor_logs_in_with_totp_and_a_code_is_good_only_once(client, world, db):
    counselor = world["counselor_a"]
    refused = login(client, "ct_a1", "not the password at all")
    code = counselor.totp_now()

    first = login(client, "counselor_a", PASSWORD, code)
    assert first.status_code == 200, first.text
    assert first.json()["user"]["roles"] == [
        {"role": "counselor", "school_id": str(world.school_a)}
    ]

    replay = login(client, "counselor_a", PASSWORD, code)
    assert replay.status_code == 401
    assert replay.content == refused.content
    assert [e.detail for e in audit_events(db, actor_id=counselor.id, action="auth:login")] == [
        None,
        '{"reason":"second_factor"}',
    ]


@pytest.fixture
def short_ttl_client(settings: Any) -> Any:
    import dataclasses

    app = create_app(dataclasses.replace(settings, token_ttl_seconds=60))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_login_token_lives_for_the_configured_ttl_then_expires(short_ttl_client, world, db):
    client = short_ttl_client
    before = utcnow()
    r = login(client, "ct_a1")
    after = utcnow()
    assert r.status_code == 200, r.text
    expires_at = datetime.fromisoformat(r.json()["expires_at"])
    assert before + timedelta(seconds=60) <= expires_at <= after + timedelta(seconds=60)
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    assert roster(client, world, headers).status_code == 200

    expire_token(db, r.json()["token"])

    r = roster(client, world, headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert roster(client, world, world["leader_a"].headers).status_code == 200


def test_expired_token_or_deactivated_account_is_refused_others_still_work(client, world, db):
    assert roster(client, world, world["ct_a1"].headers).status_code == 200

    expire_token(db, world["ct_a1"].token)

    assert roster(client, world, world["ct_a1"].headers).status_code == 401
    r = client.get(f"/api/v1/students/{world.students['a1_first']}", headers=world["ct_a1"].headers)
    assert r.status_code == 401
    assert roster(client, world, world["leader_a"].headers).status_code == 200

    # Deactivating an account ends its live sessions too.
    db.execute("UPDATE users SET is_active = :no WHERE username = 'leader_a'", {"no": False})
    r = roster(client, world, world["leader_a"].headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="casemgr"'
    assert roster(client, world, world["counselor_a"].headers).status_code == 200


def test_logout_revokes_the_token(client, world, db):
    ct = world["ct_a1"]
    assert roster(client, world, ct.headers).status_code == 200

    r = client.post(LOGOUT, headers=ct.headers)
    assert r.status_code == 204, r.text
    assert r.content == b""

    assert roster(client, world, ct.headers).status_code == 401
    assert client.post(LOGOUT, headers=ct.headers).status_code == 401
    # Other sessions are untouched.
    assert roster(client, world, world["leader_a"].headers).status_code == 200
    assert db.execute("SELECT COUNT(*) FROM auth_tokens WHERE revoked_at IS NOT NULL") == [(1,)]
    logouts = audit_events(db, action="auth:logout")
    assert [(e.actor_id, e.outcome) for e in logouts] == [(ct.id, "allow")]


GARBAGE_AUTHORIZATION = [
    None,
    "",
    "Bearer",
    "Bearer   ",
    "Basic Y3RfYTE6cGFzc3dvcmQ=",
    "Bearer not-a-real-token",
    f"Bearer {uuid.uuid4()}",
    "Token abc",
]


def test_missing_or_garbage_authorization_is_401_problem(client, world):
    for authorization in GARBAGE_AUTHORIZATION:
        headers = {} if authorization is None else {"Authorization": authorization}

        r = roster(client, world, headers)

        assert r.status_code == 401, authorization
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == 'Bearer realm="casemgr"'
        body = r.json()
        assert body["status"] == 401
        assert body["title"] == "Authentication required"
        assert "items" not in body
    # The same route answers a real token.
    assert roster(client, world, world["ct_a1"].headers).status_code == 200


def test_request_refused_for_its_token_gives_back_its_connection(app, client, world, monkeypatch):
    from litestar._kwargs.cleanup import DependencyCleanupGroup
    from sqlalchemy import event

    started: list[Any] = []
    add = DependencyCleanupGroup.add

    def tracking_add(self: Any, generator: Any) -> None:
        # Holding a reference keeps the garbage collector from finishing what the request
        # left open, so the check below does not depend on timing.
        started.append(generator)
        add(self, generator)

    balance = {"out": 0, "in": 0}
    engine = app.state.engine.sync_engine

    def checkout(*_: Any) -> None:
        balance["out"] += 1

    def checkin(*_: Any) -> None:
        balance["in"] += 1

    monkeypatch.setattr(DependencyCleanupGroup, "add", tracking_add)
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        assert roster(client, world, world["ct_a1"].headers).status_code == 200
        assert balance["out"] >= 1
        assert balance["in"] == balance["out"], "an accepted request kept a connection"

        r = roster(client, world, {"Authorization": "Bearer not-a-real-token"})

        assert r.status_code == 401
        assert balance["in"] == balance["out"], "a refused request kept a connection"
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)
        for generator in started:
            if generator.ag_frame is not None:
                client.blocking_portal.call(generator.aclose)
