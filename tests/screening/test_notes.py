"""Counseling notes: counselors only, sealed, this school year by default (SPEC §3, P3)."""

from __future__ import annotations

from datetime import timedelta

from casemgr import clock


def test_a_counselor_writes_and_reads_notes(client, world):
    student = world.students["a1_first"]
    headers = world["counselor_a"].headers
    created = client.post(
        f"/api/v1/students/{student}/counseling-notes",
        json={"notes": "第一次面谈。\n情绪平稳，约定下周再谈。"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    listed = client.get(f"/api/v1/students/{student}/counseling-notes", headers=headers)
    assert listed.status_code == 200
    body = listed.json()
    assert body["school_year"] == "2026-2027"
    (note,) = body["items"]
    assert note["id"] == created.json()["id"]
    assert note["notes"] == "第一次面谈。\n情绪平稳，约定下周再谈。"
    assert note["author_id"] == str(world["counselor_a"].id)
    assert note["result_id"] is None


def test_notes_of_an_earlier_year_need_an_explicit_audited_request(client, world, db):
    student = world.students["a1_first"]
    headers = world["counselor_a"].headers
    client.post(
        f"/api/v1/students/{student}/counseling-notes", json={"notes": "x"}, headers=headers
    )
    earlier = client.get(
        f"/api/v1/students/{student}/counseling-notes?school_year=2025-2026", headers=headers
    )
    assert earlier.status_code == 200
    assert earlier.json() == {"items": [], "school_year": "2025-2026"}
    details = db.execute(
        "SELECT detail FROM audit_events WHERE action = 'counseling_note:read' ORDER BY seq"
    )
    assert '"earlier":true' in details[-1][0]
    bad = client.get(
        f"/api/v1/students/{student}/counseling-notes?school_year=2025", headers=headers
    )
    assert bad.status_code == 422


def test_bad_notes_are_refused_naming_the_field(client, world):
    student = world.students["a1_first"]
    headers = world["counselor_a"].headers
    for body, field in (
        ({"notes": "   "}, "notes"),
        ({"notes": "a\u202eb"}, "notes"),
        ({"notes": "x" * 8001}, "notes"),
        ({"notes": "x", "result_id": "00000000-0000-4000-8000-000000000000"}, "result_id"),
        ({"notes": "x", "extra": 1}, "extra"),
    ):
        response = client.post(
            f"/api/v1/students/{student}/counseling-notes", json=body, headers=headers
        )
        assert response.status_code == 422, (body, response.text)
        assert field in response.text
    assert (
        client.get(f"/api/v1/students/{student}/counseling-notes", headers=headers).json()["items"]
        == []
    )


def test_notes_are_for_counselors_only(client, world):
    student = world.students["a1_first"]
    client.post(
        f"/api/v1/students/{student}/counseling-notes",
        json={"notes": "仅限心理教师"},
        headers=world["counselor_a"].headers,
    )
    for account in ("ct_a1", "teacher_a", "leader_a", "admin", "auditor"):
        for method in ("GET", "POST"):
            response = client.request(
                method,
                f"/api/v1/students/{student}/counseling-notes",
                json={"notes": "x"} if method == "POST" else None,
                headers=world[account].headers,
            )
            assert response.status_code == 403, (account, method)
            assert "仅限心理教师" not in response.text


def test_an_erased_student_has_no_notes(client, world):
    student = world.students["a1_first"]
    headers = world["counselor_a"].headers
    client.post(
        f"/api/v1/students/{student}/counseling-notes", json={"notes": "x"}, headers=headers
    )
    erased = client.post(
        f"/api/v1/students/{student}/erase",
        json={"reason": "guardian_request"},
        headers=world["leader_a"].headers,
    )
    assert erased.status_code == 204, erased.text
    assert (
        client.get(f"/api/v1/students/{student}/counseling-notes", headers=headers).status_code
        == 404
    )


def test_the_current_year_is_the_schools_not_the_calendars(client, world, db):
    """The clean slate turns over with the school's year (the rollover of its classes),
    not with the calendar: ten months on, before any rollover, the note is still current."""
    student = world.students["a1_first"]
    headers = world["counselor_a"].headers
    client.post(
        f"/api/v1/students/{student}/counseling-notes", json={"notes": "x"}, headers=headers
    )
    clock.set_offset(timedelta(days=300))
    from tests.screening.helpers import fresh_token

    headers = fresh_token(db, world, "counselor_a")
    assert (
        len(
            client.get(f"/api/v1/students/{student}/counseling-notes", headers=headers).json()[
                "items"
            ]
        )
        == 1
    )
