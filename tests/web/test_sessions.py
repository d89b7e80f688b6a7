"""Browser sessions: rows of auth_tokens (kind "web"), a new id at login, ended on the
server by sign-out, idle time and the absolute lifetime; cookies a script cannot read."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from casemgr import clock
from casemgr.web.sessions import SESSION_COOKIE
from tests.factories import PASSWORD
from tests.web.helpers import csrf_of, post_form, sign_in

HOST = "testserver.local"


def use_session(client: Any, token: str) -> None:
    """Make the client present ``token`` as its session, and nothing else."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, token, domain=HOST)


def session_rows(db: Any, token: str) -> list[Any]:
    digest = hashlib.sha256(token.encode()).digest()
    return db.execute(
        "SELECT kind, revoked_at, client_addr FROM auth_tokens WHERE token_hash = :h",
        {"h": digest},
    )


def test_sign_in_makes_a_web_session_holding_only_the_digest(client, world, db):
    response = sign_in(client, world["ct_a1"])
    assert response.status_code == 303
    assert response.headers["location"] == "/home"
    token = client.cookies[SESSION_COOKIE]
    rows = session_rows(db, token)
    assert [(r[0], r[1]) for r in rows] == [("web", None)]
    stored = db.execute("SELECT token_hash FROM auth_tokens")
    assert all(token.encode() not in bytes(r[0]) for r in stored)
    assert client.get("/my").status_code == 200


def test_the_session_id_changes_at_login(client, world, db):
    """Whatever the browser held before (a pre-session, a planted or an old session),
    login issues a new id and the old one no longer opens anything."""
    client.get("/")
    pre_session = client.cookies["casemgr_pre"]
    client.cookies.set(SESSION_COOKIE, "attacker-chosen-session-id-0123456789", domain=HOST)
    sign_in(client, world["ct_a1"])
    first = client.cookies[SESSION_COOKIE]
    assert first not in (pre_session, "attacker-chosen-session-id-0123456789")
    assert "casemgr_pre" not in client.cookies  # the pre-session ends with login

    sign_in(client, world["ct_a1"])  # signing in again in the same browser
    second = client.cookies[SESSION_COOKIE]
    assert second != first
    assert session_rows(db, first)[0][1] is not None  # the old session was revoked
    use_session(client, first)
    assert client.get("/my", follow_redirects=False).headers["location"] == "/?next=/my"


def test_cookie_flags_over_http_and_https(client, world):
    response = sign_in(client, world["ct_a1"])
    cookie = next(c for c in response.headers.get_list("set-cookie") if "casemgr_session=" in c)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie and "Max-Age" not in cookie  # ends with the browser

    client.cookies.clear()
    client.base_url = "https://testserver.local"  # the same application, over TLS
    response = sign_in(client, world["ct_b1"])
    cookie = next(c for c in response.headers.get_list("set-cookie") if "session=" in c)
    assert cookie.startswith("__Host-casemgr_session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "Domain" not in cookie
    assert client.get("/my").status_code == 200
    # Over HTTPS the cookie without the prefix is not read (a neighbour could set it).
    token = client.cookies["__Host-casemgr_session"]
    use_session(client, token)
    assert client.get("/my", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session_on_the_server(client, world, db):
    sign_in(client, world["ct_a1"])
    token = client.cookies[SESSION_COOKIE]
    response = post_form(client, "/sign-out", {}, from_page="/my")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert session_rows(db, token)[0][1] is not None
    use_session(client, token)
    assert client.get("/my", follow_redirects=False).headers["location"] == "/?next=/my"
    events = db.execute("SELECT action FROM audit_events WHERE action = 'auth:logout'")
    assert len(events) == 1


def test_idle_timeout_ends_the_session(client, world, settings):
    sign_in(client, world["ct_a1"])
    assert client.get("/my").status_code == 200
    clock.set_offset(timedelta(seconds=settings.token_idle_seconds - 30))
    assert client.get("/my").status_code == 200  # used: the idle clock starts again
    clock.set_offset(timedelta(seconds=2 * settings.token_idle_seconds))
    response = client.get("/my", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/?next=/my"


def test_absolute_lifetime_ends_an_active_session(client, world, settings):
    sign_in(client, world["ct_a1"])
    step = settings.token_idle_seconds - 60
    elapsed = 0
    while elapsed + step < settings.token_ttl_seconds:
        elapsed += step
        clock.set_offset(timedelta(seconds=elapsed))
        assert client.get("/my").status_code == 200
    clock.set_offset(timedelta(seconds=settings.token_ttl_seconds + 1))
    assert client.get("/my", follow_redirects=False).status_code == 303


def test_an_api_token_in_the_cookie_opens_no_page(client, world):
    client.cookies.set(SESSION_COOKIE, world["ct_a1"].token, domain=HOST)
    assert client.get("/my", follow_redirects=False).headers["location"] == "/?next=/my"


def test_changing_the_password_ends_other_sessions(client, world, db):
    sign_in(client, world["ct_a1"])
    other = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    _change_password(client, world)
    assert client.get("/my").status_code == 200  # this session goes on
    mine = client.cookies[SESSION_COOKIE]
    use_session(client, other)
    assert client.get("/my", follow_redirects=False).status_code == 303  # the other ended
    use_session(client, mine)
    assert client.get("/my").status_code == 200


def _change_password(client: Any, world: Any) -> None:
    sign_in(client, world["ct_a1"])
    new_password = "a quite different passphrase for the test"
    response = post_form(
        client,
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": new_password,
            "new_password_again": new_password,
        },
        from_page="/account",
    )
    assert response.status_code == 303, response.text


def test_one_time_password_leads_to_the_account_page_only(client, world, db):
    """A new account's one-time password reaches the account page and nothing else."""
    one_time = _new_account(client, world)
    client.cookies.clear()

    login_page = client.get("/")
    response = client.post(
        "/sign-in",
        data={
            "csrf_token": csrf_of(login_page.text),
            "username": "new.teacher",
            "password": one_time,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    for path in ("/home", "/my", "/cases"):
        assert client.get(path, follow_redirects=False).headers["location"] == "/account"
    account = client.get("/account")
    assert account.status_code == 200
    assert "一次性密码" in account.text
    new_password = "my own long passphrase at last"
    response = post_form(
        client,
        "/account/password",
        {
            "current_password": one_time,
            "new_password": new_password,
            "new_password_again": new_password,
        },
        from_page="/account",
    )
    assert response.status_code == 303
    assert client.get("/my").status_code == 200


def _new_account(leader: Any, world: Any) -> str:
    """A school leader creates a class teacher; returns the one-time password shown."""
    sign_in(leader, world["leader_a"])
    page = leader.get("/school/accounts")
    response = leader.post(
        "/school/accounts",
        data={
            "csrf_token": csrf_of(page.text),
            "school_id": str(world.school_a),
            "username": "new.teacher",
            "display_name": "新老师",
            "role": "class_teacher",
            "class_ids": str(world.class_a2),
        },
    )
    assert response.status_code == 200, response.text
    marker = 'id="one-time-password">'
    assert marker in response.text
    return response.text.split(marker, 1)[1].split("<", 1)[0]
