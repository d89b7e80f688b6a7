"""PATCH /api/v1/students/{id}: edit personal details, move between classes (SPEC §3, §4)."""

from __future__ import annotations

import uuid

from tests.factories import national_id, student_payload


def _patch(client, account, student_id, body):
    return client.patch(f"/api/v1/students/{student_id}", json=body, headers=account.headers)


def test_class_teacher_edits_details_and_only_the_changed_fields_are_resealed(client, world, db):
    student_id = world.students["a1_first"]
    before = {
        row[0]: bytes(row[1])
        for row in db.execute(
            "SELECT 'full_name', full_name FROM students WHERE id = :id UNION ALL "
            "SELECT 'address', address FROM students WHERE id = :id",
            {"id": db.id(student_id)},
        )
    }
    response = _patch(client, world["ct_a1"], student_id, {"address": "新地址 9 号"})
    assert response.status_code == 200, response.text
    assert response.json()["address"] == "新地址 9 号"
    assert response.json()["full_name"] == student_payload(world.class_a1, 1)["full_name"]
    after = dict(
        db.execute(
            "SELECT 'full_name', full_name FROM students WHERE id = :id UNION ALL "
            "SELECT 'address', address FROM students WHERE id = :id",
            {"id": db.id(student_id)},
        )
    )
    assert bytes(after["full_name"]) == before["full_name"]
    assert bytes(after["address"]) != before["address"]
    assert b"\xe6\x96\xb0\xe5\x9c\xb0\xe5\x9d\x80" not in bytes(after["address"])  # "新地址"
    event = db.execute(
        "SELECT action, outcome, detail FROM audit_events ORDER BY seq DESC LIMIT 1"
    )[0]
    assert event == ("student:update", "allow", '{"fields":["address"]}')


def test_null_clears_an_optional_field_and_omitted_fields_stay(client, world):
    student_id = world.students["a1_first"]
    response = _patch(client, world["ct_a1"], student_id, {"national_id": None, "guardians": None})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["national_id"] is None
    assert body["guardians"] == []
    assert body["address"] == student_payload(world.class_a1, 1)["address"]


def test_lookup_follows_a_changed_student_number(client, world):
    student_id = world.students["a1_first"]
    assert _patch(client, world["ct_a1"], student_id, {"student_no": "NEW-777"}).status_code == 200
    found = client.post(
        "/api/v1/students/lookup", json={"student_no": "NEW-777"}, headers=world["ct_a1"].headers
    ).json()["items"]
    assert [item["id"] for item in found] == [str(student_id)]
    old = client.post(
        "/api/v1/students/lookup", json={"student_no": "NO00001"}, headers=world["ct_a1"].headers
    ).json()["items"]
    assert old == []


def test_edits_are_validated_like_creation_and_change_nothing(client, world, db):
    student_id = world.students["a1_first"]
    before = db.execute("SELECT * FROM students WHERE id = :id", {"id": db.id(student_id)})
    events = db.execute("SELECT count(*) FROM audit_events")[0][0]
    for body, field in (
        ({"national_id": "110105201301010011"}, "national_id"),
        ({"gender": "x"}, "gender"),
        ({"full_name": " "}, "full_name"),
        ({"student_no": "NO00002"}, None),  # a1_second's number: 409
        ({"unknown": 1}, "unknown"),
    ):
        response = _patch(client, world["ct_a1"], student_id, body)
        if field is None:
            assert response.status_code == 409, response.text
        else:
            assert response.status_code == 422, response.text
            assert field in response.json()["detail"]
    assert db.execute("SELECT * FROM students WHERE id = :id", {"id": db.id(student_id)}) == before
    # Only the refused duplicate leaves a trace (a denial, in a transaction of its own).
    assert db.execute("SELECT count(*) FROM audit_events")[0][0] == events + 1
    assert db.execute("SELECT action, outcome, detail FROM audit_events ORDER BY seq DESC")[0] == (
        "student:update",
        "deny",
        '{"reason":"duplicate","status":409}',
    )


def test_keeping_ones_own_national_id_is_not_a_duplicate(client, world):
    from datetime import date

    student_id = world.students["a1_first"]
    own = national_id(date(2013, 2, 2), 1)
    response = _patch(client, world["ct_a1"], student_id, {"national_id": own, "address": "x 路"})
    assert response.status_code == 200, response.text


def test_a_leader_moves_a_student_and_reach_follows(client, world, db):
    student_id = world.students["a1_first"]
    response = _patch(client, world["leader_a"], student_id, {"class_id": str(world.class_a2)})
    assert response.status_code == 200, response.text
    assert response.json()["class_id"] == str(world.class_a2)
    # The class teacher of the class left no longer reaches the student.
    assert (
        client.get(f"/api/v1/students/{student_id}", headers=world["ct_a1"].headers).status_code
        == 404
    )
    roster = client.get(
        f"/api/v1/classes/{world.class_a2}/students", headers=world["leader_a"].headers
    )
    assert str(student_id) in {item["id"] for item in roster.json()["items"]}
    event = db.execute(
        "SELECT detail FROM audit_events WHERE action = 'student:update' ORDER BY seq DESC LIMIT 1"
    )[0][0]
    assert event == '{"fields":["class_id"]}'


def test_a_class_teacher_cannot_move_a_student_into_a_class_they_do_not_teach(client, world, db):
    student_id = world.students["a1_first"]
    response = _patch(client, world["ct_a1"], student_id, {"class_id": str(world.class_a2)})
    assert response.status_code == 404
    denial = db.execute("SELECT action, outcome FROM audit_events ORDER BY seq DESC LIMIT 1")[0]
    assert denial == ("student:update", "deny")
    row = db.execute("SELECT class_id FROM students WHERE id = :id", {"id": db.id(student_id)})
    assert uuid.UUID(str(row[0][0])) == world.class_a1


def test_moves_stay_within_the_school(client, world):
    response = _patch(
        client, world["leader_a"], world.students["a1_first"], {"class_id": str(world.class_b1)}
    )
    assert response.status_code == 422
    assert "class_id" in response.json()["detail"]


def test_edit_reach_and_roles(client, world):
    a2 = world.students["a2_first"]
    b1 = world.students["b1_first"]
    assert _patch(client, world["ct_a1"], a2, {"address": "x"}).status_code == 404
    assert _patch(client, world["ct_a1"], b1, {"address": "x"}).status_code == 404
    assert _patch(client, world["ct_a1"], uuid.uuid4(), {"address": "x"}).status_code == 404
    # Counselors read personal details but do not edit them; auditors never touch them.
    assert _patch(client, world["counselor_a"], a2, {"address": "x"}).status_code == 403
    assert _patch(client, world["auditor"], a2, {"address": "x"}).status_code == 403
    assert _patch(client, world["leader_a"], a2, {"address": "x"}).status_code == 200


def test_duplicates_out_of_reach_are_no_oracle(client, world, db):
    """The review's finding 4, as it was performed: a class teacher PATCHes a national ID
    of another school's child and the student number of a class they do not teach. Each
    probe answers the same generic 409 as a duplicate within reach, points to transfers,
    says nothing of where, and leaves a denial in the trail."""
    student_id = world.students["a1_first"]
    other_school = student_payload(world.class_b1, 4)  # b1_first, school B
    unreached = student_payload(world.class_a2, 3)  # a2_first, a class ct_a1 does not teach
    reachable = student_payload(world.class_a1, 2)  # a1_second, in ct_a1's own class
    probes = [
        {"national_id": other_school["national_id"], "birth_date": other_school["birth_date"]},
        {"student_no": unreached["student_no"]},
        {"student_no": reachable["student_no"]},
    ]
    denials = (
        "SELECT count(*) FROM audit_events WHERE action = 'student:update' AND outcome = 'deny'"
    )
    before = db.execute(denials)[0][0]
    answers = []
    for body in probes:
        response = _patch(client, world["ct_a1"], student_id, body)
        assert response.status_code == 409, response.text
        assert response.json()["transfer"] == "/api/v1/students/transfers"
        for value in (
            str(world.school_b),
            str(world.class_a2),
            str(world.class_b1),
            *body.values(),
        ):
            assert value not in response.text
        answers.append(response.json())
    assert answers[0] == answers[1] == answers[2]
    assert db.execute(denials)[0][0] == before + 3
