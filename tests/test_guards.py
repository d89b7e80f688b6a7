"""Input rules for every route (issue 5, findings 6, 9 and 10; SPEC §7).

JSON routes take application/json only (415), bodies have a size limit (413), JSON nested
deeper than 32 levels is refused before it is parsed (400), and text fields refuse control,
format and bidirectional-override characters with a 422 naming the field.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, Request, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.testing import TestClient

from casemgr.errors import InvalidInput
from casemgr.guards import CONTENT_TYPES, MAX_JSON_DEPTH, InputGuard, json_depth_exceeds
from casemgr.problems import EXCEPTION_HANDLERS
from casemgr.security_headers import add_security_headers
from casemgr.validation import MULTILINE_FIELDS, check_text, document_problems, text_problem
from tests.accounts.helpers import LOGIN, audit_events
from tests.factories import student_payload

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
WRONG_LOGIN = {"username": "ct_a1", "password": "not the password"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


# --- the depth scan ---------------------------------------------------------------------


def test_depth_scan_counts_arrays_and_objects():
    assert not json_depth_exceeds(nested(MAX_JSON_DEPTH))
    assert json_depth_exceeds(nested(MAX_JSON_DEPTH + 1))
    document = {"a": [{"b": [1, 2, {"c": None}]}]}
    assert not json_depth_exceeds(json.dumps(document).encode(), limit=5)
    assert json_depth_exceeds(json.dumps(document).encode(), limit=4)
    assert not json_depth_exceeds(b"[" + b"[[[]]]," * 50 + b"[]]", limit=4)


def test_depth_scan_ignores_brackets_inside_strings():
    text = json.dumps({"note": "[[[[{{{{" * 50, "quote": 'a "quoted" \\ [[[[ text'}).encode()
    assert not json_depth_exceeds(text, limit=1)
    # An escaped quote does not end a string; an escaped backslash before a quote does.
    assert not json_depth_exceeds(rb'["\"[[[[[[[[["]', limit=1)
    assert json_depth_exceeds(rb'["\\", [[[]]]]', limit=3)


def test_depth_scan_stays_linear_on_hostile_input():
    megabyte = 1024 * 1024
    for body in (
        b"[" * megabyte,
        b"[" * 40 + b'"\\"' * (megabyte // 3),  # one unterminated string of escaped quotes
        b"[" * 40 + b'"' * megabyte,
        b"[" + b"[]," * (megabyte // 3) + b"[]]",
    ):
        started = time.perf_counter()
        json_depth_exceeds(body)
        # Quadratic scanning of a megabyte takes minutes; linear takes milliseconds.
        assert time.perf_counter() - started < 2


# --- the text rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a\x00b",  # NUL
        "a\x07b",
        "a\x7fb",  # DEL
        "a\x85b",  # C1 control
        "line\nbreak",
        "tab\tbed",
        "abc\u202edcba",  # right-to-left override
        "\u2066isolated\u2069",
        "zero\u200bwidth",
        "joi\u200dner",
        "soft\u00adhyphen",
        "\ufeffbom",
        "tag\U000e0041",
    ],
)
def test_single_line_text_refuses_controls_and_format_characters(value):
    assert text_problem(value) is not None
    with pytest.raises(InvalidInput) as raised:
        check_text("full_name", value)
    assert raised.value.extra == {
        "errors": [{"field": "full_name", "message": text_problem(value)}]
    }
    assert value not in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        "王小明",
        "Zoë O'Brien-Smith",
        "测试\u3000学校",  # ideographic space
        "a\u00a0b",  # no-break space
        "سلام",
        "😀",
        "\ue000",  # private use
    ],
)
def test_ordinary_text_passes(value):
    assert text_problem(value) is None
    assert text_problem(value, multiline=True) is None


def test_prose_keeps_line_breaks_tabs_and_joiners_but_not_overrides_or_other_controls():
    prose = "第一行\r\n第二行\t缩进 👩\u200d👧 \u200e"
    assert text_problem(prose, multiline=True) is None
    for bad in ("a\x00b", "a\x1bb", "a\u202eb", "a\u2067b", "a\x0bb", "a\x0cb"):
        assert text_problem(bad, multiline=True) is not None, repr(bad)


def test_prose_fields_are_a_named_list():
    assert {"notes", "details", "goals", "reason", "summary", "comment"} <= MULTILINE_FIELDS
    assert "full_name" not in MULTILINE_FIELDS
    check_text("support_logs[0].notes", "a\nb")
    with pytest.raises(InvalidInput, match="full_name"):
        check_text("full_name", "a\nb")


def test_document_walk_names_fields_by_path_and_checks_keys():
    document = {
        "full_name": "ok",
        "guardians": [{"name": "ok"}, {"name": "bad\u202e"}],
        "notes": "two\nlines",
        "pairings": [{"goals": ["keep\ttab", "drop\x00"]}],
        "bad\x00key": "value",
        "nested": {"inner\u200bkey": 1},
        "numbers": [1, 2.5, True, None],
    }
    assert document_problems(document) == [
        {"field": "guardians[1].name", "message": text_problem("bad\u202e")},
        {"field": "pairings[0].goals[1]", "message": text_problem("drop\x00", multiline=True)},
        {
            "field": "body",
            "message": "an object key holds control, format or bidirectional characters",
        },
        {
            "field": "nested",
            "message": "an object key holds control, format or bidirectional characters",
        },
    ]
    assert document_problems("top\x00level") == [{"field": "body", "message": text_problem("\x00")}]
    assert len(document_problems(["\x00"] * 1000)) == 20


# --- through the service: content type, size, depth, text --------------------------------


def test_login_refuses_text_plain_and_missing_content_types(db, world, client):
    body = json.dumps(WRONG_LOGIN)
    for headers in (
        {"content-type": "text/plain"},
        {},
        {"content-type": "application/x-www-form-urlencoded"},
    ):
        response = client.post(LOGIN, content=body, headers=headers)
        problem = assert_problem(response, 415)
        assert "application/json" in problem["detail"]
    # Refused before the handler: no attempt counted, nothing audited.
    assert audit_events(db, action="auth:login") == []
    assert db.execute("SELECT count(*) FROM login_throttle")[0][0] == 0


def test_login_takes_json_with_or_without_a_utf8_charset(client, world):
    body = json.dumps(WRONG_LOGIN)
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        response = client.post(LOGIN, content=body, headers={"content-type": content_type})
        assert response.status_code == 401, content_type
    response = client.post(
        LOGIN, content=body, headers={"content-type": "application/json; charset=latin-1"}
    )
    assert_problem(response, 415)


def test_a_route_without_a_body_needs_no_content_type(client, world):
    response = client.post("/api/v1/auth/logout", headers=world["ct_a1"].headers)
    assert response.status_code == 204


def test_deeply_nested_json_is_400_on_login_never_500(client, db):
    for depth in (MAX_JSON_DEPTH + 1, 1000, 100_000):
        response = client.post(
            LOGIN, content=nested(depth), headers={"content-type": "application/json"}
        )
        problem = assert_problem(response, 400)
        assert "32" in problem["detail"]
    # 32 levels are parsed (and then refused as a login body would be).
    response = client.post(
        LOGIN, content=nested(MAX_JSON_DEPTH), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_brackets_inside_strings_do_not_count_as_depth(client, world):
    response = client.post(LOGIN, json={"username": "[" * 100, "password": "{" * 100})
    assert response.status_code == 401


def test_body_over_one_mebibyte_is_413(client, world):
    padding = "x" * (1024 * 1024)
    response = client.post(LOGIN, json={**WRONG_LOGIN, "padding": padding})
    problem = assert_problem(response, 413)
    assert str(1024 * 1024) in problem["detail"]
    just_under = client.post(LOGIN, json={**WRONG_LOGIN, "padding": "x" * (1024 * 1000)})
    assert just_under.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        b'{"username": "\xff\xfe", "password": "x"}',  # not UTF-8
        b'{"username": "\xed\xa0\x80", "password": "x"}',  # an encoded surrogate
        rb'{"username": "\ud800", "password": "x"}',  # a lone surrogate escape
        b'{"username": "ct_a1", "password": ',
    ],
)
def test_malformed_json_and_bad_utf8_are_a_4xx_problem(client, world, body):
    response = client.post(LOGIN, content=body, headers={"content-type": "application/json"})
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {"field": "body", "message": "must be well-formed JSON encoded as UTF-8"}
    ]


def test_numbers_out_of_range_are_a_422_not_a_500(client, world):
    for number in (b"1" * 5000, b"1e999999"):
        body = b'{"username": "ct_a1", "password": "x", "totp": ' + number + b"}"
        response = client.post(LOGIN, content=body, headers={"content-type": "application/json"})
        problem = assert_problem(response, 422)
        assert problem["errors"] == [{"field": "body", "message": "holds a number out of range"}]


def students_count(db: Any) -> int:
    return int(db.execute("SELECT count(*) FROM students")[0][0])


@pytest.mark.parametrize(
    ("override", "field", "secret"),
    [
        ({"full_name": "测试\x00学生"}, "full_name", "测试\x00学生"),
        ({"full_name": "Anna\u200dBell"}, "full_name", "Anna\u200dBell"),
        ({"address": "测试路\u202e号01"}, "address", "测试路\u202e号01"),
        ({"student_no": "NO\n123"}, "student_no", "NO\n123"),
    ],
)
def test_student_text_with_controls_is_422_naming_the_field(
    client, world, db, override, field, secret
):
    before = students_count(db)
    payload = student_payload(world.class_a1, 130, **override)
    response = client.post("/api/v1/students", json=payload, headers=world["ct_a1"].headers)
    problem = assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == [field]
    assert secret not in response.text
    assert json.dumps(secret)[1:-1] not in response.text
    assert students_count(db) == before


def test_guardian_names_are_checked_by_path(client, world, db):
    guardians = [
        {"name": "测试家长", "relation": "母亲", "phone": "13800000001"},
        {"name": "测试\u2067家长", "relation": "父亲", "phone": "13800000002"},
    ]
    payload = student_payload(world.class_a1, 131, guardians=guardians)
    response = client.post("/api/v1/students", json=payload, headers=world["ct_a1"].headers)
    problem = assert_problem(response, 422)
    assert problem["errors"] == [{"field": "guardians[1].name", "message": text_problem("\u2067")}]


def test_patch_and_lookup_are_guarded_too(client, world):
    headers = world["ct_a1"].headers
    student = world.students["a1_first"]
    patched = client.patch(
        f"/api/v1/students/{student}", json={"full_name": "x\x1by"}, headers=headers
    )
    assert assert_problem(patched, 422)["errors"][0]["field"] == "full_name"
    lookup = client.post("/api/v1/students/lookup", content="student_no=1", headers=headers)
    assert_problem(lookup, 415)


def test_clean_student_still_created(client, world):
    payload = student_payload(world.class_a1, 132, full_name="Zoë 测试\u3000学生")
    response = client.post("/api/v1/students", json=payload, headers=world["ct_a1"].headers)
    assert response.status_code == 201, response.text


# --- the generic mechanism that upload routes declare ------------------------------------


@post("/import", opt={CONTENT_TYPES: (CSV, XLSX)}, request_max_body_size=4096)
async def upload(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"bytes": len(await request.body())}


@post("/either", opt={CONTENT_TYPES: ("application/json", CSV)})
async def either(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"bytes": len(await request.body())}


@post("/echo", request_max_body_size=64)
async def echo(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return data


@get("/read")
async def read() -> dict[str, str]:
    return {"status": "ok"}


@delete("/thing/{thing_id:uuid}", status_code=204)
async def remove(thing_id: FromPath[uuid.UUID]) -> None:
    return None


@pytest.fixture
def toy() -> Iterator[TestClient]:
    app = Litestar(
        route_handlers=[upload, either, echo, read, remove],
        middleware=[InputGuard()],
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[add_security_headers],
        request_max_body_size=1024,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_upload_routes_take_the_types_they_declare(toy):
    rows = b"student_no,full_name\n1,a\n"
    for content_type in (CSV, "text/csv; charset=gb18030", XLSX):
        response = toy.post("/import", content=rows, headers={"content-type": content_type})
        assert response.status_code == 201, content_type
        assert response.json() == {"bytes": len(rows)}
    refused = toy.post("/import", json={"rows": []})
    assert "text/csv" in assert_problem(refused, 415)["detail"]


def test_a_route_may_take_json_or_another_type_and_json_is_still_checked(toy):
    assert toy.post("/either", content=b"a,b\n", headers={"content-type": CSV}).status_code == 201
    assert toy.post("/either", json={"a": "b"}).status_code == 201
    assert_problem(
        toy.post("/either", content=nested(40), headers={"content-type": "application/json"}), 400
    )
    assert_problem(toy.post("/either", content=b"x", headers={"content-type": "text/plain"}), 415)


def test_size_limits_follow_each_route(toy):
    assert (
        toy.post("/import", content=b"x" * 4096, headers={"content-type": CSV}).status_code == 201
    )
    assert_problem(toy.post("/import", content=b"x" * 4097, headers={"content-type": CSV}), 413)
    assert_problem(toy.post("/either", content=b"x" * 1025, headers={"content-type": CSV}), 413)
    assert toy.post("/echo", json={"a": "b" * 40}).json() == {"a": "b" * 40}
    assert_problem(toy.post("/echo", json={"a": "b" * 60}), 413)


def test_json_read_by_the_guard_reaches_the_handler_unchanged(toy):
    document = {"名字": "测试", "list": [1, 2, {"x": None}]}
    assert toy.post("/echo", json=document).json() == document


def test_bodies_on_get_and_delete_are_ignored(toy):
    assert (
        toy.request(
            "GET", "/read", content=b"\x00junk", headers={"content-type": "text/plain"}
        ).status_code
        == 200
    )
    response = toy.request(
        "DELETE",
        f"/thing/{uuid.uuid4()}",
        content=nested(100),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 204


def test_a_nonsense_content_length_is_400(toy):
    response = toy.post(
        "/echo", content=b"{}", headers={"content-type": "application/json", "content-length": "2x"}
    )
    assert_problem(response, 400)
