"""Emergency access (SPEC P6): possible, visible and short."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.care.helpers import TERM_START, events, travel


def ask(care, who, student, reason="The guardian reported the child missing tonight.", expect=201):
    return care.call(
        who,
        "POST",
        f"/api/v1/students/{care.world.students[student]}/emergency-access",
        {"reason": reason},
        expect=expect,
    )


@pytest.fixture
def other_file(care):
    """A file of a2_first (class A2), which ct_a1 does not reach normally."""
    case_id = care.open_case("counselor_a", "a2_first").json()["id"]
    care.log("counselor_a", case_id, notes="First meeting with the family.")
    return case_id


def test_a_grant_opens_the_file_for_an_hour_and_flags_every_event(care, world, db, other_file):
    care.case("ct_a1", other_file, expect=404)
    grant = ask(care, "ct_a1", "a2_first").json()
    assert grant["expires_at"].startswith("2026-09-07T02:00:00")
    granted = events(db, "emergency_access:grant")[-1]
    assert granted.emergency and granted.purpose == "emergency_access"
    assert granted.student_id == world.students["a2_first"]

    first = events(db)[-1].seq
    # Within the hour: the file as a class teacher would see it, writes included.
    file = care.case("ct_a1", other_file).json()
    assert [log["notes"] for log in file["support_logs"]] == ["First meeting with the family."]
    care.ok("ct_a1", "GET", f"/api/v1/cases/{other_file}/timeline")
    care.log("ct_a1", other_file, notes="Called the guardian back.")
    care.visit("ct_a1", "a2_first")
    assert other_file in [c["id"] for c in care.ok("ct_a1", "GET", "/api/v1/cases")["items"]]
    under_grant = [e for e in events(db) if e.seq > first]
    assert under_grant and all(e.emergency for e in under_grant), [
        (e.action, e.emergency) for e in under_grant
    ]
    assert all(e.purpose == "emergency_access" for e in under_grant)
    # Not for taking the whole record away, though.
    care.call("ct_a1", "GET", f"/api/v1/students/{world.students['a2_first']}/export", expect=403)
    assert events(db)[-1].emergency and events(db)[-1].outcome == "deny"
    # Nor for standing duties: the student does not join the caller's tasks.
    assert all(t.get("student_id") != str(world.students["a2_first"]) for t in care.tasks("ct_a1"))

    # The grant expires mid-session: the same token, a minute past the hour, reaches nothing.
    from casemgr import clock

    travel(db, world, TERM_START + timedelta(minutes=30))
    care.case("ct_a1", other_file, expect=200)
    clock.freeze(TERM_START + timedelta(minutes=59))
    care.case("ct_a1", other_file, expect=200)
    clock.freeze(TERM_START + timedelta(minutes=61))
    care.case("ct_a1", other_file, expect=404)
    care.log("ct_a1", other_file, expect=404)
    denied = events(db)[-1]
    assert denied.outcome == "deny" and not denied.emergency

    # Auditors see the grant, its reason and how much happened under it, and review it.
    travel(db, world, TERM_START + timedelta(minutes=62))
    items = care.ok("auditor", "GET", "/api/v1/audit/emergency-access?reviewed=false")["items"]
    assert len(items) == 1
    item = items[0]
    assert item["reason"] == "The guardian reported the child missing tonight."
    assert item["user_id"] == str(world["ct_a1"].id) and item["username"] == "ct_a1"
    assert item["live"] is False and item["accesses"] >= 6
    reviewed = care.ok(
        "auditor",
        "POST",
        f"/api/v1/audit/emergency-access/{item['id']}/review",
        {"note": "Confirmed with the head teacher."},
    )
    assert reviewed["reviewed_by"] == str(world["auditor"].id)
    assert reviewed["review_note"] == "Confirmed with the head teacher."
    care.call(
        "auditor",
        "POST",
        f"/api/v1/audit/emergency-access/{item['id']}/review",
        {},
        expect=409,
    )
    assert care.ok("auditor", "GET", "/api/v1/audit/emergency-access?reviewed=false")["items"] == []
    listed = events(db, "emergency_access:list")
    assert listed and all(e.purpose == "oversight" for e in listed)


def test_the_reason_must_say_something(care, world, db):
    before = db.execute("SELECT COUNT(*) FROM emergency_grants")
    for reason in ("", "   urgent!!     ", "x" * 14, " " * 30, "\n\t  short  \n"):
        r = ask(care, "teacher_a", "a1_first", reason=reason, expect=422)
        assert [e["field"] for e in r.json()["errors"]] == ["reason"]
    assert db.execute("SELECT COUNT(*) FROM emergency_grants") == before
    ask(care, "teacher_a", "a1_first", reason="  fifteen chars!! ", expect=201)


def test_who_may_ask(care, world, db):
    # Bureau roles never; staff of another school get "not found", like a missing id.
    for who in ("admin", "auditor"):
        ask(care, who, "a1_first", expect=403)
    other = ask(care, "ct_b1", "a1_first", expect=404)
    import uuid

    missing = care.call(
        "ct_b1",
        "POST",
        f"/api/v1/students/{uuid.uuid4()}/emergency-access",
        {"reason": "The guardian reported the child missing tonight."},
        expect=404,
    )
    assert other.content == missing.content
    assert json.loads(events(db)[-1].detail) == {"status": 404}
    # A school leader, who never reads case content, may ask (and is then flagged).
    ask(care, "leader_a", "a1_first", expect=201)
    # The student's own class teacher needs no grant.
    ask(care, "ct_a1", "a1_first", expect=409)


def test_only_auditors_review(care, world, db):
    grant = ask(care, "teacher_a", "a1_first").json()
    for who in ("ct_a1", "teacher_a", "counselor_a", "leader_a", "admin"):
        care.call(who, "GET", "/api/v1/audit/emergency-access", expect=403)
        care.call(
            who, "POST", f"/api/v1/audit/emergency-access/{grant['id']}/review", {}, expect=403
        )
    import uuid

    care.call(
        "auditor", "POST", f"/api/v1/audit/emergency-access/{uuid.uuid4()}/review", {}, expect=404
    )
