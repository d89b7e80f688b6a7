"""Attacks on the pages, each one a test: headers, redirects, markup in data, crafted
Unicode, every role against every page, records out of reach, labels in rosters."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from casemgr.students.schemas import StudentIn
from casemgr.students.services import insert_student
from tests.web.conftest import as_user
from tests.web.helpers import csrf_of, post_form, sign_in

LANDING_PAGES = [
    "/",
    "/my",
    "/cases",
    "/screening",
    "/screening/rounds",
    "/school",
    "/school/accounts",
    "/school/import",
    "/school/rollover",
    "/school/transfers",
    "/school/visits",
    "/admin",
    "/audit",
    "/reports/care-summary",
    "/account",
]
ROLES = ["ct_a1", "teacher_a", "counselor_a", "leader_a", "admin", "auditor"]
# What each role gets on each page: 200 where it works, 403 where its role never may (as
# the API answers), 404 where the page is about a school it has none of. Pinned whole, so
# that a new grant shows up in review.
EXPECTED = {
    "ct_a1": [303, 200, 200, 403, 200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 200],
    "teacher_a": [303, 200, 200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 200],
    "counselor_a": [303, 403, 200, 200, 200, 403, 403, 403, 403, 403, 403, 403, 403, 200, 200],
    "leader_a": [303, 403, 403, 403, 200, 200, 200, 200, 200, 200, 200, 403, 403, 200, 200],
    "admin": [303, 403, 403, 403, 403, 404, 200, 404, 404, 403, 403, 200, 403, 200, 200],
    "auditor": [303, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 200, 403, 200],
}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def check_headers(response: Any) -> None:
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_against_every_page(client, world, role):
    sign_in(client, world[role])
    got = [client.get(path, follow_redirects=False).status_code for path in LANDING_PAGES]
    assert dict(zip(LANDING_PAGES, got, strict=True)) == dict(
        zip(LANDING_PAGES, EXPECTED[role], strict=True)
    )


def test_refusals_are_audited_like_the_api(client, world, db):
    sign_in(client, world["auditor"])
    assert client.get("/my").status_code == 403
    denied = db.execute(
        "SELECT action, outcome FROM audit_events WHERE outcome = 'deny' AND actor_id = :a",
        {"a": db.id(world["auditor"].id)},
    )
    assert ("home_visit:write", "deny") in [tuple(r) for r in denied]


def test_signed_out_readers_are_sent_to_sign_in(client):
    for path in LANDING_PAGES[1:]:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/?next={path}"
        check_headers(response)


def test_every_page_and_error_sends_the_security_headers_and_no_store(client, world, case_a1):
    check_headers(client.get("/"))
    sign_in(client, world["ct_a1"])
    for path in ("/my", "/cases", f"/cases/{case_a1}", "/account", "/audit", "/cases/nope"):
        check_headers(client.get(path))
    static = client.get("/static/app.css")
    assert (
        static.status_code == 200
        and "frame-ancestors 'none'" in static.headers["content-security-policy"]
    )


def test_records_out_of_reach_answer_404_and_never_show(client, world, case_a1):
    sign_in(client, world["ct_b1"])
    for path in (
        f"/cases/{case_a1}",
        f"/students/{world.students['a1_first']}",
        f"/cases/{uuid.uuid4()}",
        "/cases/not-an-id",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "测试学生001" not in response.text
    client.cookies.clear()
    sign_in(client, world["auditor"])
    assert client.get(f"/cases/{case_a1}").status_code == 403


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/%2F%2Fevil.example",
        "javascript:alert(1)",
        "/api/v1/me",
        " /my",
        "/my\r\nSet-Cookie: x=1",
    ],
)
def test_next_never_leaves_the_site(client, world, target):
    page = client.get("/", params={"next": target})
    assert "evil.example" not in page.text or target == "/%2F%2Fevil.example"
    response = client.post(
        "/sign-in",
        data={
            "csrf_token": csrf_of(page.text),
            "username": "ct_a1",
            "password": "correct horse battery staple",
            "next": target,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location in ("/home", "/%2F%2Fevil.example")
    assert not location.startswith("//") and "\n" not in location
    # the language switch takes a next= too
    response = post_form(client, "/language", {"lang": "en", "next": target}, from_page="/my")
    assert response.headers["location"] in ("/", "/%2F%2Fevil.example")


def test_next_within_the_site_is_followed(client, world, case_a1):
    response = client.get(f"/cases/{case_a1}", follow_redirects=False)
    assert response.headers["location"] == f"/?next=/cases/{case_a1}"
    page = client.get(response.headers["location"])
    response = client.post(
        "/sign-in",
        data={
            "csrf_token": csrf_of(page.text),
            "username": "ct_a1",
            "password": "correct horse battery staple",
            "next": f"/cases/{case_a1}",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == f"/cases/{case_a1}"


MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_markup_in_names_and_notes_is_shown_as_text(client, world, db, case_a1):
    """Autoescaping everywhere: a name or a note with markup never becomes markup."""

    async def add(session: Any) -> uuid.UUID:
        from casemgr.schools.models import SchoolClass

        school_class = await session.get(SchoolClass, world.class_a1)
        data = StudentIn(
            class_id=world.class_a1,
            full_name=MARKUP,
            gender="female",
            birth_date=__import__("datetime").date(2013, 5, 5),
            student_no="X-001",
        )
        return (await insert_student(session, db.crypto, school_class, data, actor=None)).id

    student_id = db.in_transaction(add)
    sign_in(client, world["ct_a1"])
    response = post_form(
        client,
        "/my/support-logs",
        {
            "case_id": str(case_a1),
            "occurred_on": "2026-11-30",
            "kind": "other",
            "notes": MARKUP + "\n第二行",
        },
        from_page="/my",
    )
    assert response.status_code == 303
    for path in ("/my", f"/students/{student_id}", f"/cases/{case_a1}"):
        html = client.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in client.get("/my").text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("notes", "看起来正常\u202egnp.exe"),  # right-to-left override
        ("notes", "隔离\u2067字符"),  # first strong isolate
        ("notes", "空\x00字符"),
        ("kind", "academic\u200b"),  # zero-width space in a single-line field
    ],
)
def test_crafted_unicode_is_refused_naming_the_field(client, world, case_a1, db, field, value):
    sign_in(client, world["ct_a1"])
    data = {
        "case_id": str(case_a1),
        "occurred_on": "2026-11-30",
        "kind": "academic",
        "notes": "正常的记录",
        field: value,
    }
    response = post_form(client, "/my/support-logs", data, from_page="/my")
    assert response.status_code == 422
    assert value not in response.text  # the value is never echoed
    labels = {"notes": "记录", "kind": "类型"}
    assert labels[field] in response.text
    assert db.execute("SELECT count(*) FROM support_logs")[0][0] == 0


def test_titles_and_addresses_carry_codes_not_names(client, world, case_a1):
    sign_in(client, world["ct_a1"])
    html = client.get(f"/cases/{case_a1}").text
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    assert title and "测试学生" not in title.group(1)
    html = client.get(f"/students/{world.students['a1_first']}").text
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    assert title and "测试学生" not in title.group(1)
    hrefs = re.findall(r'(?:href|action)="([^"]+)"', client.get("/my").text)
    assert hrefs and not any("测试" in h or "%E6" in h for h in hrefs)


def test_the_roster_looks_the_same_for_a_student_with_a_file(client, world, case_a1):
    """a1_first has a case file, a1_second none: their roster rows differ only in the
    values every student has (name, number, code, id)."""
    sign_in(client, world["ct_a1"])
    html = client.get("/my").text
    roster = html[html.index('<section class="card" aria-labelledby="class-') :]
    rows = re.findall(r"<tr>\s*<td>NO0000[12]</td>.*?</tr>", roster, re.S)
    assert len(rows) == 2

    def shape(row: str) -> str:
        row = re.sub(r"[0-9a-f-]{36}", "ID", row)
        row = re.sub(r"测试学生00\d|NO0000\d|[A-Z0-9]{4}-[A-Z0-9]{4}", "V", row)
        return row

    assert shape(rows[0]) == shape(rows[1])


def test_pages_are_not_framed_and_forms_post_only_here(client):
    response = client.get("/")
    assert "form-action 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


def test_a_disabled_account_loses_its_browser_session_at_once(client, world, db):
    sign_in(client, world["ct_a1"])
    assert client.get("/my").status_code == 200

    async def disable(ctx: Any) -> None:
        from casemgr.accounts import admin

        await admin.disable_account(ctx, world["ct_a1"].id)

    as_user(db, world["leader_a"], disable)
    assert client.get("/my", follow_redirects=False).status_code == 303
