"""The caller's own account (``casemgr.accounts.selfservice``): who am I, password,
second factor, sessions."""

from __future__ import annotations

import uuid
from typing import Any

import pyotp

from casemgr.authz import Role
from tests.accounts.helpers import wrong_totp
from tests.admin.helpers import NEW_PASSWORD, add_account, bearer, login
from tests.factories import PASSWORD


def me(client: Any, account: Any) -> dict[str, Any]:
    response = client.get("/api/v1/me", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_me_says_what_each_role_works_with(client, world):
    a_classes = {str(world.class_a1), str(world.class_a2)}
    ct = me(client, world["ct_a1"])
    assert ct["user"]["username"] == "ct_a1"
    assert ct["user"]["roles"] == [{"role": "class_teacher", "school_id": str(world.school_a)}]
    assert ct["user"]["totp_enrolled"] is False
    assert [c["id"] for c in ct["classes"]] == [str(world.class_a1)]
    assert ct["schools"] == [{"id": str(world.school_a), "name": "测试学校甲"}]
    for who in ("teacher_a", "counselor_a", "leader_a"):
        found = me(client, world[who])
        assert {c["id"] for c in found["classes"]} == a_classes, who
        assert {c["school_year"] for c in found["classes"]} == {"2026-2027"}
    counselor = me(client, world["counselor_a"])
    assert counselor["user"]["totp_enrolled"] is True
    admin = me(client, world["admin"])
    assert {s["id"] for s in admin["schools"]} == {str(world.school_a), str(world.school_b)}
    assert admin["classes"] == []
    auditor = me(client, world["auditor"])
    assert auditor["schools"] == [] and auditor["classes"] == []


def test_changing_the_password_ends_the_other_sessions(client, world, db):
    one = login(client, "ct_a1", PASSWORD).json()["token"]
    two = login(client, "ct_a1", PASSWORD).json()["token"]
    changed = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(one),
    )
    assert changed.status_code == 204, changed.text
    assert client.get("/api/v1/me", headers=bearer(one)).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(two)).status_code == 401
    assert client.get("/api/v1/me", headers=world["ct_a1"].headers).status_code == 401
    assert login(client, "ct_a1", PASSWORD).status_code == 401
    assert login(client, "ct_a1", NEW_PASSWORD).status_code == 200
    event = db.execute("SELECT detail FROM audit_events WHERE action = 'auth:change_password'")
    assert event == [('{"sessions_ended":2}',)]
    assert NEW_PASSWORD not in str(db.execute("SELECT * FROM audit_events"))


def test_password_change_refusals(client, world, db):
    headers = world["teacher_a"].headers

    def change(current: str, new: str) -> Any:
        return client.post(
            "/api/v1/me/password",
            json={"current_password": current, "new_password": new},
            headers=headers,
        )

    weak = change(PASSWORD, "password1234")
    assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "new_password"
    same = change(PASSWORD, PASSWORD)
    assert same.status_code == 422 and same.json()["errors"][0]["field"] == "new_password"
    wrong = change("not the password at all", NEW_PASSWORD)
    assert wrong.status_code == 422
    assert wrong.json()["errors"] == [{"field": "current_password", "message": "is not correct"}]
    # Wrong current passwords count like failed logins: the pair is throttled after five.
    for _ in range(4):
        assert change("still not the password", NEW_PASSWORD).status_code == 422
    assert change(PASSWORD, NEW_PASSWORD).status_code == 429
    assert db.execute(
        "SELECT count(*) FROM audit_events WHERE action = 'auth:change_password'"
        " AND outcome = 'deny'"
    ) == [(6,)]


def test_two_password_changes_at_once_do_not_both_win(world, db, settings):
    import asyncio

    from casemgr.accounts import selfservice
    from casemgr.authz import Principal
    from casemgr.db import create_engine, create_sessionmaker
    from casemgr.errors import Conflict

    principal = Principal(user_id=world["ct_a1"].id, username="ct_a1", grants=(), client="10.0.0.1")

    async def main() -> list[Any]:
        engine = create_engine(settings.database_url)
        sessions = create_sessionmaker(engine)
        try:
            return await asyncio.gather(
                *(
                    selfservice.change_password(
                        sessions,
                        db.crypto,
                        settings,
                        principal,
                        current_password=PASSWORD,
                        new_password=f"{NEW_PASSWORD} {n}",
                    )
                    for n in range(2)
                ),
                return_exceptions=True,
            )
        finally:
            await engine.dispose()

    outcomes = asyncio.run(main())
    assert sum(isinstance(o, int) for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, Conflict) for o in outcomes) == 1, outcomes


def test_totp_enrolment_seals_the_pending_secret_and_spends_the_code(client, world, db):
    headers = world["teacher_a"].headers
    started = client.post("/api/v1/me/totp", headers=headers)
    assert started.status_code == 200
    body = started.json()
    secret = body["secret"]
    assert body["otpauth_uri"].startswith("otpauth://totp/casemgr:teacher_a?secret=" + secret)
    assert body["qr_svg"].startswith("<svg") and "path" in body["qr_svg"]
    stored = db.execute(
        "SELECT totp_pending_secret, totp_secret FROM users WHERE username = 'teacher_a'"
    )[0]
    assert stored[0] is not None and secret.encode() not in bytes(stored[0])
    assert stored[1] is None
    wrong = client.post(
        "/api/v1/me/totp/confirm", json={"code": wrong_totp(secret)}, headers=headers
    )
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "code"
    code = pyotp.TOTP(secret).now()
    assert (
        client.post("/api/v1/me/totp/confirm", json={"code": code}, headers=headers).status_code
        == 204
    )
    assert me(client, world["teacher_a"])["user"]["totp_enrolled"] is True
    # The confirming code cannot log in (replay); a second enrolment is refused.
    assert login(client, "teacher_a", PASSWORD, code).status_code == 401
    assert client.post("/api/v1/me/totp", headers=headers).status_code == 409
    confirm_again = client.post("/api/v1/me/totp/confirm", json={"code": code}, headers=headers)
    assert confirm_again.status_code == 409
    actions = [
        a
        for (a,) in db.execute(
            "SELECT action FROM audit_events WHERE action LIKE 'auth:totp%' ORDER BY seq"
        )
    ]
    assert actions == ["auth:totp_start", "auth:totp_enrol", "auth:totp_enrol"]


def test_sessions_are_listed_and_ended_by_their_owner_only(client, world, db):
    token = login(client, "ct_a1", PASSWORD).json()["token"]
    listed = client.get("/api/v1/me/sessions", headers=bearer(token)).json()["items"]
    assert len(listed) == 2
    current = [s for s in listed if s["current"]]
    assert len(current) == 1 and current[0]["client_addr"] == "testclient"
    assert current[0]["kind"] == "api"
    other = next(s for s in listed if not s["current"])
    # Someone else's session, or an unknown one: 404.
    assert (
        client.delete(
            f"/api/v1/me/sessions/{other['id']}", headers=world["ct_b1"].headers
        ).status_code
        == 404
    )
    assert (
        client.delete(f"/api/v1/me/sessions/{uuid.uuid4()}", headers=bearer(token)).status_code
        == 404
    )
    assert (
        client.delete(f"/api/v1/me/sessions/{other['id']}", headers=bearer(token)).status_code
        == 204
    )
    assert client.get("/api/v1/me", headers=world["ct_a1"].headers).status_code == 401
    remaining = client.get("/api/v1/me/sessions", headers=bearer(token)).json()["items"]
    assert [s["id"] for s in remaining] == [current[0]["id"]]


def test_an_unenrolled_second_factor_role_made_by_hand_still_cannot_log_in(client, world, db):
    # Only a one-time password lets such an account in; its own password does not.
    add_account(db, "plain.counselor", Role.TEACHER, world.school_a)
    db.execute(
        "UPDATE role_grants SET role = 'counselor' WHERE user_id IN"
        " (SELECT id FROM users WHERE username = 'plain.counselor')"
    )
    assert login(client, "plain.counselor", PASSWORD).status_code == 401
