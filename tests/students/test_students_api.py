"""Student routes of SPEC §6: create, read, roster; bad input is a 422 that changes nothing."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.factories import national_id, student_payload

CODE = re.compile(r"^[23456789ABCDEFGHJKMNPQRSTVWXYZ]{4}-[23456789ABCDEFGHJKMNPQRSTVWXYZ]{4}$")


def _counts(db) -> tuple[int, int]:
    students = db.execute("SELECT count(*) FROM students")[0][0]
    events = db.execute("SELECT count(*) FROM audit_events")[0][0]
    return students, events


def test_class_teacher_creates_and_reads_a_student(client, world, db):
    payload = student_payload(world.class_a1, 100, address="示例路 8 号", national_id=None)
    created = client.post("/api/v1/students", json=payload, headers=world["ct_a1"].headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "code"}
    assert CODE.match(body["code"])

    read = client.get(f"/api/v1/students/{body['id']}", headers=world["ct_a1"].headers)
    assert read.status_code == 200, read.text
    student = read.json()
    assert student["full_name"] == payload["full_name"]
    assert student["student_no"] == payload["student_no"]
    assert student["birth_date"] == payload["birth_date"]
    assert student["gender"] == payload["gender"]
    assert student["address"] == "示例路 8 号"
    assert student["national_id"] is None
    assert student["guardians"] == payload["guardians"]
    assert student["class_id"] == str(world.class_a1)
    assert read.headers["cache-control"] == "no-store"


def test_create_and_read_are_audited_without_content(client, world, db):
    payload = student_payload(world.class_a1, 101)
    student_id = client.post(
        "/api/v1/students", json=payload, headers=world["ct_a1"].headers
    ).json()["id"]
    client.get(f"/api/v1/students/{student_id}", headers=world["ct_a1"].headers)
    rows = db.execute(
        "SELECT action, outcome, actor_id, role, resource_id FROM audit_events"
        " WHERE resource_id = :id ORDER BY seq",
        {"id": student_id},
    )
    assert [(r[0], r[1]) for r in rows] == [("student:create", "allow"), ("student:read", "allow")]
    assert {uuid.UUID(str(r[2])) for r in rows} == {world["ct_a1"].id}
    assert {r[3] for r in rows} == {"class_teacher"}
    everything = " ".join(str(v) for row in db.execute("SELECT * FROM audit_events") for v in row)
    assert payload["full_name"] not in everything
    assert payload["student_no"] not in everything


def test_codes_are_random_not_derived(client, world):
    codes = set()
    for n in range(110, 116):
        response = client.post(
            "/api/v1/students",
            json=student_payload(world.class_a1, n),
            headers=world["ct_a1"].headers,
        )
        codes.add(response.json()["code"])
    assert len(codes) == 6
    # Same class, same day, same creator: nothing shared but the format.
    assert len({code[:4] for code in codes}) > 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gender": "other"}, "gender"),
        ({"birth_date": "2013-02-30"}, "birth_date"),
        ({"birth_date": "2999-01-01"}, "birth_date"),
        ({"national_id": "110105201301010011"}, "national_id"),
        ({"national_id": "11010520130101001"}, "national_id"),
        ({"full_name": ""}, "full_name"),
        ({"full_name": "   "}, "full_name"),
        ({"student_no": "x" * 40}, "student_no"),
        ({"class_id": "not-a-uuid"}, "class_id"),
        ({"guardians": [{"name": "家长", "relation": "母亲", "phone": "call me"}]}, "phone"),
        ({"nickname": "小明"}, "nickname"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_changes_nothing(client, world, db, change, field):
    before = _counts(db)
    payload = {**student_payload(world.class_a1, 120), **change}
    response = client.post("/api/v1/students", json=payload, headers=world["ct_a1"].headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 422
    assert field in problem["detail"]
    assert any(field in e["field"] or field in e["message"] for e in problem["errors"])
    # The rejected value is not echoed back (it may be personal data).
    for value in change.values():
        if isinstance(value, str) and len(value.strip()) > 3:
            assert value not in response.text
    assert _counts(db) == before


def test_missing_required_field_is_422(client, world, db):
    payload = student_payload(world.class_a1, 121)
    del payload["student_no"]
    response = client.post("/api/v1/students", json=payload, headers=world["ct_a1"].headers)
    assert response.status_code == 422
    assert "student_no" in response.json()["detail"]


def test_malformed_json_is_422(client, world):
    response = client.post(
        "/api/v1/students",
        content=b"{not json",
        headers={**world["ct_a1"].headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_national_id_check_digit_and_lowercase_x(client, world):
    from datetime import date

    valid = national_id(date(2013, 5, 6), 7)
    ok = client.post(
        "/api/v1/students",
        json=student_payload(world.class_a1, 122, national_id=valid, birth_date="2013-05-06"),
        headers=world["ct_a1"].headers,
    )
    assert ok.status_code == 201, ok.text
    # Find a serial whose check character is X and submit it in lower case.
    serial = next(s for s in range(1000) if national_id(date(2013, 5, 6), s).endswith("X"))
    x_id = national_id(date(2013, 5, 6), serial)
    lower = client.post(
        "/api/v1/students",
        json=student_payload(
            world.class_a1, 123, national_id=x_id.lower(), birth_date="2013-05-06"
        ),
        headers=world["ct_a1"].headers,
    )
    assert lower.status_code == 201, lower.text
    read = client.get(f"/api/v1/students/{lower.json()['id']}", headers=world["ct_a1"].headers)
    assert read.json()["national_id"] == x_id


def test_duplicate_student_number_in_school_is_409(client, world, db):
    first = student_payload(world.class_a1, 130)
    assert (
        client.post("/api/v1/students", json=first, headers=world["ct_a1"].headers).status_code
        == 201
    )
    again = student_payload(world.class_a1, 131, student_no=first["student_no"])
    students, events = _counts(db)
    response = client.post("/api/v1/students", json=again, headers=world["ct_a1"].headers)
    assert response.status_code == 409
    assert first["student_no"] not in response.text
    assert response.json()["transfer"] == "/api/v1/students/transfers"
    # Nothing is stored but the denial, committed on its own.
    assert _counts(db) == (students, events + 1)


def test_same_student_number_in_another_school_is_fine(client, world):
    payload = student_payload(world.class_b1, 132, student_no="NO00001", national_id=None)
    response = client.post("/api/v1/students", json=payload, headers=world["ct_b1"].headers)
    assert response.status_code == 201, response.text


def test_duplicate_national_id_is_409(client, world):
    first = student_payload(world.class_a1, 133)
    assert (
        client.post("/api/v1/students", json=first, headers=world["ct_a1"].headers).status_code
        == 201
    )
    again = student_payload(
        world.class_b1, 134, national_id=first["national_id"], birth_date=first["birth_date"]
    )
    refused = client.post("/api/v1/students", json=again, headers=world["ct_b1"].headers)
    assert refused.status_code == 409
    # The answer names neither the school nor the class nor the field: it points to the
    # transfer process, the same answer as for a number used in one's own school.
    body = refused.json()
    assert body["transfer"] == "/api/v1/students/transfers"
    assert str(world.school_a) not in refused.text
    assert first["national_id"] not in refused.text


def test_roster_has_identical_fields_for_every_student(client, world):
    response = client.get(
        f"/api/v1/classes/{world.class_a1}/students", headers=world["ct_a1"].headers
    )
    assert response.status_code == 200
    items = response.json()["items"]
    assert {item["id"] for item in items} == {
        str(world.students["a1_first"]),
        str(world.students["a1_second"]),
    }
    assert all(set(item) == {"id", "code", "full_name", "student_no"} for item in items)
    assert [item["student_no"] for item in items] == sorted(item["student_no"] for item in items)


def test_roster_of_unknown_class_is_404(client, world):
    response = client.get(
        f"/api/v1/classes/{uuid.uuid4()}/students", headers=world["ct_a1"].headers
    )
    assert response.status_code == 404


def test_requests_without_token_are_401(client, world):
    response = client.get(f"/api/v1/students/{world.students['a1_first']}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
