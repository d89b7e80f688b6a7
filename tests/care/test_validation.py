"""Bad input answers 422 naming the field and changes nothing; crafted text round-trips
exactly or is refused, never half-stored."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from casemgr.authz import Role
from tests.care.helpers import add_staff, day

TABLES = (
    "case_files",
    "care_categories",
    "pairings",
    "pairing_mentors",
    "support_logs",
    "home_visits",
    "guidance_notes",
    "emergency_grants",
    "visit_requirements",
)


def snapshot(db: Any) -> dict[str, Any]:
    return {t: db.execute(f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}


def fields(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    return [e["field"] for e in response.json()["errors"]]


@pytest.fixture
def file(care):
    case_id = care.open_case("ct_a1", "a1_first").json()["id"]
    return case_id


def test_refused_input_names_the_field_and_changes_nothing(care, world, db, file):
    s = care.student("a1_second")
    before = snapshot(db)
    cases = [
        (
            "POST",
            f"/api/v1/students/{s}/care-categories",
            {"category": "troubled", "since": day(-1), "details": ""},
            "category",
        ),
        (
            "POST",
            f"/api/v1/students/{s}/care-categories",
            {"category": "orphan", "since": day(3), "details": ""},
            "since",
        ),
        (
            "POST",
            f"/api/v1/students/{s}/care-categories",
            {"category": "orphan", "since": day(-3), "details": "", "review_on": day(-9)},
            "review_on",
        ),
        (
            "POST",
            f"/api/v1/students/{s}/care-categories",
            {"category": "orphan", "since": "2026-02-30", "details": ""},
            "since",
        ),
        ("POST", "/api/v1/cases", {"student_id": str(s), "reason": "   "}, "reason"),
        ("POST", "/api/v1/cases", {"student_id": "not-a-uuid", "reason": "x"}, "student_id"),
        ("PATCH", f"/api/v1/cases/{file}", {"review_on": "2020-01-01"}, "review_on"),
        ("PATCH", f"/api/v1/cases/{file}", {}, "body"),
        ("POST", f"/api/v1/cases/{file}/close", {"reason": ""}, "reason"),
        (
            "POST",
            f"/api/v1/cases/{file}/support-logs",
            {"occurred_on": day(0), "kind": "scolding", "notes": "x"},
            "kind",
        ),
        (
            "POST",
            f"/api/v1/cases/{file}/support-logs",
            {"occurred_on": day(1), "kind": "other", "notes": "x"},
            "occurred_on",
        ),
        (
            "POST",
            f"/api/v1/cases/{file}/support-logs",
            {"occurred_on": day(0), "kind": "other", "notes": "x", "follow_up_on": day(-1)},
            "follow_up_on",
        ),
        (
            "POST",
            f"/api/v1/cases/{file}/support-logs",
            {"occurred_on": day(0), "kind": "other", "notes": " \n\t "},
            "notes",
        ),
        (
            "POST",
            f"/api/v1/cases/{file}/support-logs",
            {"occurred_on": day(0), "kind": "other", "notes": "x", "extra": 1},
            "extra",
        ),
        (
            "POST",
            f"/api/v1/students/{s}/home-visits",
            {"visited_on": day(0), "participant_ids": [], "mode": "carrier pigeon", "notes": "x"},
            "mode",
        ),
        (
            "POST",
            f"/api/v1/students/{s}/home-visits",
            {
                "visited_on": day(0),
                "participant_ids": [str(uuid.uuid4())],
                "mode": "phone",
                "notes": "x",
            },
            "participant_ids",
        ),
        (
            "POST",
            f"/api/v1/students/{s}/home-visits",
            {
                "visited_on": day(0),
                "participant_ids": [str(world["ct_b1"].id)],
                "mode": "phone",
                "notes": "x",
            },
            "participant_ids",
        ),
    ]
    for method, path, body, field in cases:
        r = care.call("ct_a1", method, path, body)
        fields(r)
        # Named as a field, or (an unknown field) in the message about the body.
        assert field in r.json()["detail"], (path, body, r.text)
        # The value typed never comes back in the answer.
        for value in body.values() if isinstance(body, dict) else ():
            if isinstance(value, str) and len(value) > 5 and value not in (day(-1), day(0)):
                assert value not in r.text or field == "body", (value, r.text)
    care.call(
        "leader_a",
        "PUT",
        f"/api/v1/schools/{world.school_a}/visit-requirements",
        {"class_teacher_visits": 13, "mentor_visits": 1},
        expect=422,
    )
    assert snapshot(db) == before


def test_mentors_must_be_staff_of_the_school_and_the_answer_tells_nothing_more(
    care, world, db, file
):
    add_staff(db, world, "teacher_b", Role.TEACHER, world.school_b)
    before = snapshot(db)
    answers = []
    for mentor in (
        str(uuid.uuid4()),  # nobody
        str(world["teacher_b"].id),  # a teacher of another school
        str(world["leader_a"].id),  # staff of the school, but not a content role
        str(world["admin"].id),
        str(world["auditor"].id),
    ):
        r = care.call(
            "ct_a1",
            "POST",
            f"/api/v1/cases/{file}/pairings",
            {"mode": "one_to_one", "mentor_ids": [mentor], "goals": "g", "starts_on": day(0)},
        )
        assert fields(r) == ["mentor_ids"]
        answers.append(r.json())
    assert all(a == answers[0] for a in answers)
    shapes = [
        ({"mode": "one_to_one", "mentor_ids": ["teacher_a", "counselor_a"]}, "mentor_ids"),
        ({"mode": "many_to_one", "mentor_ids": ["teacher_a"]}, "mentor_ids"),
        ({"mode": "many_to_one", "mentor_ids": ["teacher_a", "teacher_a"]}, "mentor_ids"),
        ({"mode": "many_to_one", "mentor_ids": ["teacher_a", "ct_a1"], "lead": None}, "lead_id"),
        (
            {"mode": "many_to_one", "mentor_ids": ["teacher_a", "ct_a1"], "lead": "counselor_a"},
            "lead_id",
        ),
        ({"mode": "one_to_one", "mentor_ids": ["teacher_a"], "lead": "ct_a1"}, "lead_id"),
        ({"mode": "one_to_one", "mentor_ids": []}, "mentor_ids"),
    ]
    for shape, field in shapes:
        body = {
            "mode": shape["mode"],
            "mentor_ids": [str(world[m].id) for m in shape["mentor_ids"]],
            "goals": "Reading.",
            "starts_on": day(0),
        }
        if shape.get("lead"):
            body["lead_id"] = str(world[shape["lead"]].id)
        r = care.call("ct_a1", "POST", f"/api/v1/cases/{file}/pairings", body)
        assert field in fields(r), (shape, r.text)
    assert snapshot(db) == before


CRAFTED_OK = [
    "Line one\nLine two\twith a tab",
    "家长说：孩子最近很开心 👨‍👩‍👧 (family emoji with zero-width joiners)",
    "Arabic without overrides: مرحبا بالعالم and Hebrew שלום",
    "Combining: e\u0301 and decomposed Ａ full-width",
    "\U0001f9d1\u200d\U0001f3eb teacher emoji, \u00ad soft hyphen",
]
CRAFTED_REFUSED = [
    "right-to-left override \u202e gnp.exe",
    "isolate \u2066 inside \u2069",
    "a NUL \x00 in the middle",
    "bell \x07 character",
]


def test_crafted_unicode_in_notes_round_trips_or_is_refused(care, world, db, file):
    for text in CRAFTED_OK:
        care.log("ct_a1", file, notes=text)
        care.visit("ct_a1", "a1_first", notes=text)
    logs = care.ok("ct_a1", "GET", f"/api/v1/cases/{file}/support-logs")["items"]
    assert sorted(log["notes"] for log in logs) == sorted(t.strip() for t in CRAFTED_OK)
    visits = care.ok("ct_a1", "GET", f"/api/v1/students/{care.student('a1_first')}/home-visits")[
        "items"
    ]
    assert sorted(v["notes"] for v in visits) == sorted(t.strip() for t in CRAFTED_OK)
    before = snapshot(db)
    for text in CRAFTED_REFUSED:
        r = care.log("ct_a1", file, notes=text, expect=None)
        assert fields(r) == ["notes"], r.text
        r = care.call(
            "ct_a1",
            "POST",
            f"/api/v1/cases/{file}/close",
            {"reason": text},
        )
        assert fields(r) == ["reason"]
    # Single-line fields refuse invisible characters that notes may keep.
    r = care.call(
        "ct_a1",
        "POST",
        f"/api/v1/students/{care.student('a1_first')}/care-categories",
        {"category": "orphan\u200d", "since": day(-1), "details": ""},
    )
    assert fields(r) == ["category"]
    assert snapshot(db) == before
    # The timeline cuts long notes at a character boundary, never inside a pair.
    care.log("ct_a1", file, notes="😀" * 200)
    summaries = [
        i["summary"]
        for i in care.ok("ct_a1", "GET", f"/api/v1/cases/{file}/timeline")["items"]
        if i["kind"] == "support_log"
    ]
    assert any(s.startswith("Support (conversation): 😀😀") and s.endswith("…") for s in summaries)


def test_very_long_text_is_refused_before_anything_is_stored(care, world, db, file):
    before = snapshot(db)
    r = care.log("ct_a1", file, notes="长" * 8001, expect=None)
    assert fields(r) == ["notes"]
    r = care.call("ct_a1", "POST", f"/api/v1/cases/{file}/close", {"reason": "x" * 2001})
    assert fields(r) == ["reason"]
    assert snapshot(db) == before
