"""Account administration (``casemgr.accounts.admin``): who creates and manages whom,
one-time passwords, separation of duties, disabling and resets (acceptance 5 and 6)."""

from __future__ import annotations

import uuid
from typing import Any

import pyotp
import pytest

from casemgr.authz import Role
from tests.admin.helpers import NEW_PASSWORD, add_account, bearer, first_login, login
from tests.factories import PASSWORD


def new_user(client: Any, who: Any, role: str, school_id: Any, **extra: Any) -> Any:
    body = {
        "username": extra.pop("username", f"u{uuid.uuid4().hex[:10]}"),
        "display_name": extra.pop("display_name", "测试老师"),
        "roles": [{"role": role, "school_id": str(school_id) if school_id else None}],
        **extra,
    }
    return client.post("/api/v1/users", json=body, headers=who.headers)


def denials(db: Any) -> list[tuple[str, str]]:
    return db.execute("SELECT action, detail FROM audit_events WHERE outcome = 'deny' ORDER BY seq")


def test_a_leader_creates_the_school_staff_roles_in_the_own_school_only(client, world, db):
    leader = world["leader_a"]
    for role in ("teacher", "class_teacher", "counselor"):
        created = new_user(client, leader, role, world.school_a)
        assert created.status_code == 201, created.text
        assert set(created.json()) == {"id", "username", "one_time_password"}
    # Roles above the leader's own: 403 (even in the own school), and audited.
    for role, school in (
        ("school_leader", world.school_a),
        ("bureau_admin", None),
        ("auditor", None),
    ):
        before = len(denials(db))
        assert new_user(client, leader, role, school).status_code == 403, role
        assert len(denials(db)) == before + 1
    # Another school: 404, like a school that does not exist.
    assert new_user(client, leader, "teacher", world.school_b).status_code == 404
    assert new_user(client, leader, "teacher", uuid.uuid4()).status_code == 404
    assert denials(db)[-1][0] == "user:grant_teacher"


def test_roles_without_account_management_get_403(client, world):
    for who in ("ct_a1", "teacher_a", "counselor_a", "auditor"):
        assert new_user(client, world[who], "teacher", world.school_a).status_code == 403, who
        response = client.get("/api/v1/users", headers=world[who].headers)
        assert response.status_code == 403, who


def test_separation_of_duties_holds_for_every_granter(client, world, db):
    admin = world["admin"]
    mixed = [
        [{"role": "auditor"}, {"role": "teacher", "school_id": str(world.school_a)}],
        [{"role": "auditor"}, {"role": "bureau_admin"}],
        [{"role": "bureau_admin"}, {"role": "counselor", "school_id": str(world.school_a)}],
    ]
    for roles in mixed:
        response = client.post(
            "/api/v1/users",
            json={"username": "mixed.roles", "display_name": "x", "roles": roles},
            headers=admin.headers,
        )
        assert response.status_code == 403, roles
        assert denials(db)[-1] == (
            "user:grant_role",
            '{"reason":"separation_of_duties","status":403}',
        )
    assert db.execute("SELECT id FROM users WHERE username = 'mixed.roles'") == []
    # An auditor never becomes a class teacher, whoever asks.
    response = client.post(
        f"/api/v1/classes/{world.class_a1}/teachers",
        json={"user_id": str(world["auditor"].id)},
        headers=admin.headers,
    )
    assert response.status_code == 403
    # Nor an admin, nor may an auditor give themselves anything.
    response = client.post(
        f"/api/v1/classes/{world.class_a1}/teachers",
        json={"user_id": str(world["auditor"].id)},
        headers=world["auditor"].headers,
    )
    assert response.status_code == 403


def test_admin_creates_an_auditor_who_logs_in_once_without_a_factor(client, world):
    created = new_user(client, world["admin"], "auditor", None, username="new.auditor")
    assert created.status_code == 201, created.text
    otp = created.json()["one_time_password"]
    token = login(client, "new.auditor", otp).json()["token"]
    # Restricted: the audit trail is not reachable yet.
    assert client.get("/api/v1/audit/verify", headers=bearer(token)).status_code == 403
    token, secret = first_login(client, "new.auditor", otp, enrol_totp=True)
    assert client.get("/api/v1/audit/verify", headers=bearer(token)).status_code == 200
    # From now on the password alone is not enough.
    assert login(client, "new.auditor", NEW_PASSWORD).status_code == 401
    assert secret is not None


def test_a_one_time_password_token_reaches_only_self_service(client, world, db):
    created = new_user(client, world["leader_a"], "counselor", world.school_a, username="c.new")
    otp = created.json()["one_time_password"]
    token = login(client, "c.new", otp).json()["token"]
    headers = bearer(token)
    for method, path in (
        ("GET", "/api/v1/schools"),
        ("GET", f"/api/v1/classes/{world.class_a1}/students"),
        ("GET", "/api/v1/me/sessions"),
        ("GET", f"/api/v1/students/{world.students['a1_first']}"),
    ):
        assert client.request(method, path, headers=headers).status_code == 403, path
    assert db.execute("SELECT count(*) FROM audit_events WHERE action = 'auth:restricted'") == [
        (4,)
    ]
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    # Changing the password alone is not enough for a role that needs a second factor.
    changed = client.post(
        "/api/v1/me/password",
        json={"current_password": otp, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert changed.status_code == 204
    assert client.get("/api/v1/schools", headers=headers).status_code == 403
    secret = client.post("/api/v1/me/totp", headers=headers).json()["secret"]
    confirmed = client.post(
        "/api/v1/me/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=headers
    )
    assert confirmed.status_code == 204
    assert client.get("/api/v1/schools", headers=headers).status_code == 200
    # Logout works for a restricted token too.
    other = login(client, "ct_a1", PASSWORD).json()["token"]
    assert client.post("/api/v1/auth/logout", headers=bearer(other)).status_code == 204


def test_the_one_time_login_records_the_client_address(client, world, db):
    created = new_user(client, world["leader_a"], "teacher", world.school_a, username="t.new")
    login(client, "t.new", created.json()["one_time_password"])
    rows = db.execute(
        "SELECT client_addr FROM auth_tokens WHERE user_id = :u",
        {"u": db.id(uuid.UUID(created.json()["id"]))},
    )
    assert rows == [("testclient",)]


def test_disabling_an_account_kills_every_token_at_once(client, world, db):
    first = login(client, "ct_a1", PASSWORD).json()["token"]
    second = world["ct_a1"].token
    roster = f"/api/v1/classes/{world.class_a1}/students"
    assert client.get(roster, headers=bearer(first)).status_code == 200
    response = client.post(
        f"/api/v1/users/{world['ct_a1'].id}/disable", headers=world["leader_a"].headers
    )
    assert response.status_code == 204
    for token in (first, second):
        assert client.get(roster, headers=bearer(token)).status_code == 401
    assert login(client, "ct_a1", PASSWORD).status_code == 401
    revoked = db.execute(
        "SELECT count(*) FROM auth_tokens WHERE user_id = :u AND revoked_at IS NULL",
        {"u": db.id(world["ct_a1"].id)},
    )
    assert revoked == [(0,)]
    event = db.execute("SELECT detail FROM audit_events WHERE action = 'user:disable'")
    assert event == [('{"sessions_ended":2}',)]
    listed = client.get("/api/v1/users", headers=world["leader_a"].headers).json()["items"]
    assert {u["username"]: u["disabled"] for u in listed}["ct_a1"] is True


def test_who_may_disable_whom(client, world):
    leader = world["leader_a"]
    # Another school's account, a bureau account: not the leader's (404).
    assert (
        client.post(
            f"/api/v1/users/{world['ct_b1'].id}/disable", headers=leader.headers
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/users/{world['admin'].id}/disable", headers=leader.headers
        ).status_code
        == 404
    )
    assert (
        client.post(f"/api/v1/users/{uuid.uuid4()}/disable", headers=leader.headers).status_code
        == 404
    )
    # Content roles never manage accounts.
    assert (
        client.post(
            f"/api/v1/users/{world['teacher_a'].id}/disable", headers=world["counselor_a"].headers
        ).status_code
        == 403
    )
    # The admin manages everyone but not their own account through this route.
    assert (
        client.post(
            f"/api/v1/users/{world['admin'].id}/disable", headers=world["admin"].headers
        ).status_code
        == 422
    )
    assert (
        client.post(
            f"/api/v1/users/{world['ct_b1'].id}/disable", headers=world["admin"].headers
        ).status_code
        == 204
    )


def test_a_leader_does_not_manage_a_fellow_leader(client, world, db):
    peer = add_account(db, "peer.leader", Role.SCHOOL_LEADER, world.school_a)
    for path in ("disable", "reset-password"):
        response = client.post(f"/api/v1/users/{peer.id}/{path}", headers=world["leader_a"].headers)
        assert response.status_code == 403, path


def test_a_reset_forces_a_password_change_and_clears_the_factor(client, world, db):
    counselor = world["counselor_a"]
    old = login(client, "counselor_a", PASSWORD, counselor.totp_now()).json()["token"]
    reset = client.post(
        f"/api/v1/users/{counselor.id}/reset-password", headers=world["leader_a"].headers
    )
    assert reset.status_code == 200, reset.text
    otp = reset.json()["one_time_password"]
    assert otp not in str(db.execute("SELECT detail FROM audit_events"))
    # Every session ended; the old password is gone.
    assert client.get("/api/v1/me", headers=bearer(old)).status_code == 401
    assert client.get("/api/v1/me", headers=counselor.headers).status_code == 401
    assert (
        login(client, "counselor_a", PASSWORD, pyotp.TOTP(counselor.totp_secret).now()).status_code
        == 401
    )
    # The one-time password needs no factor (it was cleared) and reaches self-service only.
    token = login(client, "counselor_a", otp).json()["token"]
    me = client.get("/api/v1/me", headers=bearer(token)).json()["user"]
    assert me["password_change_required"] is True and me["totp_enrolled"] is False
    assert client.get("/api/v1/schools", headers=bearer(token)).status_code == 403
    token, _ = first_login(client, "counselor_a", otp, enrol_totp=True)
    assert client.get("/api/v1/schools", headers=bearer(token)).status_code == 200
    events = db.execute("SELECT detail FROM audit_events WHERE action = 'user:reset_password'")
    assert events == [('{"second_factor_cleared":true,"sessions_ended":2}',)]


def test_users_are_listed_within_reach(client, world):
    leader = client.get("/api/v1/users", headers=world["leader_a"].headers)
    assert leader.status_code == 200
    names = {u["username"] for u in leader.json()["items"]}
    assert names == {"ct_a1", "teacher_a", "counselor_a", "leader_a"}
    for item in leader.json()["items"]:
        assert all(r["school_id"] == str(world.school_a) for r in item["roles"])
    assert (
        client.get(
            f"/api/v1/users?school_id={world.school_b}", headers=world["leader_a"].headers
        ).status_code
        == 404
    )
    admin = client.get("/api/v1/users", headers=world["admin"].headers).json()["items"]
    assert {u["username"] for u in admin} == {
        "ct_a1",
        "ct_b1",
        "teacher_a",
        "counselor_a",
        "leader_a",
        "admin",
        "auditor",
    }
    only_b = client.get(f"/api/v1/users?school_id={world.school_b}", headers=world["admin"].headers)
    assert {u["username"] for u in only_b.json()["items"]} == {"ct_b1"}


def test_class_teacher_assignment_and_release(client, world, db):
    leader = world["leader_a"]
    teacher = world["teacher_a"]
    roster = f"/api/v1/classes/{world.class_a2}/students"
    assert client.get(roster, headers=teacher.headers).status_code == 404
    path = f"/api/v1/classes/{world.class_a2}/teachers"
    assert (
        client.post(path, json={"user_id": str(teacher.id)}, headers=leader.headers).status_code
        == 204
    )
    # The role and the class hold at once; assigning again changes nothing.
    assert client.get(roster, headers=teacher.headers).status_code == 200
    assert (
        client.post(path, json={"user_id": str(teacher.id)}, headers=leader.headers).status_code
        == 204
    )
    grants = db.execute(
        "SELECT role FROM role_grants WHERE user_id = :u ORDER BY role", {"u": db.id(teacher.id)}
    )
    assert grants == [("class_teacher",), ("teacher",)]
    # Another school's class or account: 404; an unknown user: 404.
    other = f"/api/v1/classes/{world.class_b1}/teachers"
    assert (
        client.post(other, json={"user_id": str(teacher.id)}, headers=leader.headers).status_code
        == 404
    )
    assert (
        client.post(
            path, json={"user_id": str(world["ct_b1"].id)}, headers=leader.headers
        ).status_code
        == 404
    )
    assert (
        client.post(path, json={"user_id": str(uuid.uuid4())}, headers=leader.headers).status_code
        == 404
    )
    assert (
        client.post(
            path, json={"user_id": str(teacher.id)}, headers=world["ct_a1"].headers
        ).status_code
        == 403
    )
    released = client.delete(f"{path}/{teacher.id}", headers=leader.headers)
    assert released.status_code == 204
    assert client.get(roster, headers=teacher.headers).status_code == 404
    assert client.delete(f"{path}/{teacher.id}", headers=leader.headers).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "wang\u0435i"}, "username"),  # a Cyrillic look-alike
        ({"display_name": "王\u202e老师"}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"class_ids": ["00000000-0000-4000-8000-000000000000"]}, "class_ids[0]"),
    ],
)
def test_bad_account_input_is_422_naming_the_field(client, world, db, body, field):
    payload = {
        "username": "fine.name",
        "display_name": "王老师",
        "roles": [{"role": "class_teacher", "school_id": str(world.school_a)}],
        **body,
    }
    response = client.post("/api/v1/users", json=payload, headers=world["leader_a"].headers)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}
    assert db.execute("SELECT id FROM users WHERE username = 'fine.name'") == []


def test_usernames_fold_and_a_folded_duplicate_is_taken(client, world):
    created = new_user(
        client, world["leader_a"], "teacher", world.school_a, username="ＤＥＭＯ.Teacher"
    )
    assert created.status_code == 201
    assert created.json()["username"] == "demo.teacher"
    again = new_user(client, world["leader_a"], "teacher", world.school_a, username="demo.TEACHER")
    assert again.status_code == 409
