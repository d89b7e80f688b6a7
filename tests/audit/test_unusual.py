"""Unusual access for the auditors (issue 11): many reads or refusals in an hour, access
outside school hours, emergency accesses not reviewed; computed from the audit trail, with
thresholds from the settings and time from ``casemgr.clock``."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from casemgr import clock
from casemgr.audit.unusual import Rules
from casemgr.settings import Settings
from tests.care.helpers import TERM_START, events, travel
from tests.factories import build_world, student_payload
from tests.web.helpers import post_form, sign_in

URL = "/api/v1/audit/unusual"
SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2026-09-07 is a Monday; TERM_START is 09:00 in Beijing.
MONDAY = date(2026, 9, 7)


def beijing(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small thresholds, so that a handful of requests is unusual."""
    return dataclasses.replace(settings, unusual_reads_per_hour=2, unusual_denials_per_hour=2)


@pytest.fixture
def world(db: Any) -> Any:
    clock.freeze(TERM_START)
    return build_world(db)


def at(db: Any, world: Any, when: datetime) -> None:
    travel(db, world, when)


def read(client: Any, world: Any, who: str, student: str, expect: int = 200) -> None:
    response = client.get(f"/api/v1/students/{world.students[student]}", headers=world[who].headers)
    assert response.status_code == expect, response.text


def unusual(client: Any, world: Any, query: str = "", who: str = "auditor") -> list[dict]:
    response = client.get(f"{URL}{query}", headers=world[who].headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def review(client: Any, world: Any, finding_id: str, body: Any, expect: int) -> Any:
    response = client.post(
        f"{URL}/{finding_id}/review", json=body, headers=world["auditor"].headers
    )
    assert response.status_code == expect, response.text
    return response.json()


def kinds(items: list[dict], actor: Any) -> list[str]:
    return sorted(item["kind"] for item in items if item["actor_id"] == str(actor.id))


def test_many_distinct_students_read_in_an_hour_are_listed_and_reviewed(client, world, db):
    at(db, world, beijing(MONDAY, 10, 5))
    # The counselor reaches the school: three distinct students in one hour (limit 2).
    for student in ("a1_first", "a1_second", "a2_first"):
        read(client, world, "counselor_a", student)
    # The class teacher reads one student five times: one student, nothing unusual.
    for _ in range(5):
        read(client, world, "ct_a1", "a1_first")
    # Creating students is no read (an import writes one event per student).
    added = []
    for n in range(70, 74):
        created = client.post(
            "/api/v1/students",
            json=student_payload(world.class_a1, n),
            headers=world["ct_a1"].headers,
        )
        assert created.status_code == 201
        added.append(created.json()["id"])

    at(db, world, beijing(MONDAY, 12))
    items = unusual(client, world)
    assert kinds(items, world["ct_a1"]) == []
    [found] = [i for i in items if i["actor_id"] == str(world["counselor_a"].id)]
    hour = beijing(MONDAY, 10)
    assert found["id"] == f"many_reads.{world['counselor_a'].id.hex}.{hour:%Y%m%d%H}"
    assert found["kind"] == "many_reads" and found["role"] == "counselor"
    assert found["count"] == 3 and found["threshold"] == 2
    assert datetime.fromisoformat(found["window_start"]) == hour
    assert datetime.fromisoformat(found["window_end"]) == hour + timedelta(hours=1)
    assert datetime.fromisoformat(found["first_at"]) == beijing(MONDAY, 10, 5)
    assert found["reviewed"] is False and found["outcome"] is None
    # Pseudonymous ids and counts only: no name, number or address of any student.
    listing = client.get(URL, headers=world["auditor"].headers).text
    for n in (1, 2, 3):
        payload = student_payload(world.class_a1, n)
        for key in ("full_name", "student_no", "address"):
            assert payload[key] not in listing
    assert events(db, "audit:unusual_list")[-1].purpose == "oversight"

    # An outcome from the closed set; a note is for emergency accesses only.
    review(client, world, found["id"], {}, 422)
    refused = review(client, world, found["id"], {"outcome": "fine"}, 422)
    assert "outcome" in str(refused)
    refused = review(client, world, found["id"], {"outcome": "explained", "note": "ok"}, 422)
    assert [e["field"] for e in refused["errors"]] == ["note"]
    done = review(client, world, found["id"], {"outcome": "explained"}, 200)
    assert done["reviewed"] is True and done["outcome"] == "explained"
    assert done["reviewed_by"] == str(world["auditor"].id)
    # The review is an event in the trail, with the outcome and no free text.
    [event] = events(db, "audit:unusual_review")
    assert event.resource_id == found["id"] and event.actor_id == world["auditor"].id
    assert msgspec.json.decode(event.detail) == {
        "kind": "many_reads",
        "outcome": "explained",
        "count": 3,
    }
    assert event.outcome == "allow" and event.purpose == "oversight"
    # Once only; afterwards it is listed as reviewed, or left out of the open ones.
    review(client, world, found["id"], {"outcome": "follow_up"}, 409)
    assert events(db, "audit:unusual_review")[-1].outcome == "deny"
    assert [i["id"] for i in unusual(client, world, "?reviewed=false")] == []
    [again] = unusual(client, world, "?reviewed=true")
    assert again["outcome"] == "explained" and again["reviewed_at"]

    # More of the same later in that hour (another second, another student): one finding
    # still, open again with the larger count; the earlier review does not cover it.
    at(db, world, beijing(MONDAY, 10, 40))
    response = client.get(f"/api/v1/students/{added[0]}", headers=world["counselor_a"].headers)
    assert response.status_code == 200
    at(db, world, beijing(MONDAY, 12, 30))
    [reopened] = unusual(client, world, "?reviewed=false")
    assert reopened["id"] == found["id"] and reopened["count"] == 4
    assert reopened["reviewed"] is False and reopened["outcome"] is None
    done = review(client, world, found["id"], {"outcome": "follow_up"}, 200)
    assert done["count"] == 4 and done["outcome"] == "follow_up"
    assert unusual(client, world, "?reviewed=false") == []


def test_refusals_in_an_hour_are_listed_but_failed_logins_are_not(client, world, db):
    at(db, world, beijing(MONDAY, 14))
    # A class teacher of school B probes three students of school A: 404 each, audited.
    for student in ("a1_first", "a1_second", "a2_first"):
        read(client, world, "ct_b1", student, expect=404)
    # Three failed logins of the class teacher's account: throttling answers those.
    for _ in range(3):
        failed = client.post(
            "/api/v1/auth/login", json={"username": "ct_a1", "password": "wrong password!"}
        )
        assert failed.status_code == 401
    at(db, world, beijing(MONDAY, 15))
    items = unusual(client, world, "?kind=many_denials")
    assert [(i["kind"], i["actor_id"], i["count"]) for i in items] == [
        ("many_denials", str(world["ct_b1"].id), 3)
    ]


def test_access_outside_school_hours_and_days(client, world, db):
    # In hours: 07:00 exactly and 18:59 on a Monday.
    at(db, world, beijing(MONDAY, 7, 0))
    read(client, world, "ct_a1", "a1_first")
    at(db, world, beijing(MONDAY, 18, 59))
    read(client, world, "ct_a1", "a1_first")
    # Out of hours: 19:00 exactly and 23:30 on Monday (one finding for the day) ...
    at(db, world, beijing(MONDAY, 19, 0))
    read(client, world, "ct_a1", "a1_first")
    at(db, world, beijing(MONDAY, 23, 30))
    read(client, world, "ct_a1", "a1_second")
    # ... 06:59 on Tuesday, and Saturday at ten (not a school day).
    at(db, world, beijing(MONDAY + timedelta(days=1), 6, 59))
    read(client, world, "ct_a1", "a1_first")
    at(db, world, beijing(MONDAY + timedelta(days=5), 10, 0))
    read(client, world, "ct_a1", "a1_first")
    # Refused accesses off hours are the refusals rule's business, not this one's.
    read(client, world, "ct_b1", "a1_first", expect=404)

    at(db, world, beijing(MONDAY + timedelta(days=6), 9))
    found = {i["id"]: i for i in unusual(client, world, "?kind=off_hours")}
    hex_id = world["ct_a1"].id.hex
    assert sorted(found) == [
        f"off_hours.{hex_id}.20260907",
        f"off_hours.{hex_id}.20260908",
        f"off_hours.{hex_id}.20260912",
    ]
    monday = found[f"off_hours.{hex_id}.20260907"]
    assert monday["count"] == 2
    assert datetime.fromisoformat(monday["first_at"]) == beijing(MONDAY, 19, 0)
    assert datetime.fromisoformat(monday["window_start"]) == beijing(MONDAY, 0, 0)
    assert monday["threshold"] is None
    review(client, world, monday["id"], {"outcome": "follow_up"}, 200)
    assert len(unusual(client, world, "?kind=off_hours&reviewed=false")) == 2


def test_school_hours_days_and_time_zone_come_from_the_settings(client, world, db, settings):
    # Saturday is a school day here, and the school day ends at 21:00 in Urumqi (UTC+6).
    changed = dataclasses.replace(
        settings,
        school_hours=(8 * 60, 21 * 60),
        school_days=(0, 1, 2, 3, 4, 5),
        timezone="Asia/Urumqi",
    )
    from litestar.testing import TestClient

    from casemgr.app import create_app

    with TestClient(create_app(changed), raise_server_exceptions=False) as other:
        saturday = MONDAY + timedelta(days=5)
        urumqi = ZoneInfo("Asia/Urumqi")
        at(db, world, datetime(2026, 9, 12, 20, 30, tzinfo=urumqi))
        read(other, world, "ct_a1", "a1_first")
        at(db, world, datetime(2026, 9, 12, 21, 0, tzinfo=urumqi))
        read(other, world, "ct_a1", "a1_second")
        at(db, world, datetime(2026, 9, 12, 21, 1, tzinfo=urumqi))
        items = unusual(other, world, "?kind=off_hours")
    assert [(i["id"], i["count"]) for i in items] == [
        (f"off_hours.{world['ct_a1'].id.hex}.{saturday:%Y%m%d}", 1)
    ]


def test_off_hours_follow_daylight_saving_time():
    rules = Rules(1, 1, (7 * 60, 19 * 60), (0, 1, 2, 3, 4), ZoneInfo("America/New_York"))
    # Sunday 8 March 2026: clocks go forward; Monday 9 March is the first day on EDT.
    since = datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # Monday 00:00 EDT
    until = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
    assert rules.off_hours(since, until) == [
        (since, datetime(2026, 3, 9, 11, 0, tzinfo=UTC), "20260309"),
        (datetime(2026, 3, 9, 23, 0, tzinfo=UTC), until, "20260309"),
    ]
    friday = datetime(2026, 3, 6, 5, 0, tzinfo=UTC)  # Friday 00:00 EST
    assert rules.off_hours(friday, friday + timedelta(days=1))[0][1] == datetime(
        2026, 3, 6, 12, 0, tzinfo=UTC
    )


def test_emergency_accesses_stay_listed_until_reviewed(client, world, db):
    at(db, world, beijing(MONDAY, 10))
    grant = client.post(
        f"/api/v1/students/{world.students['a2_first']}/emergency-access",
        json={"reason": "The guardian reported the child missing tonight."},
        headers=world["ct_a1"].headers,
    )
    assert grant.status_code == 201
    grant_id = uuid.UUID(grant.json()["id"])
    read(client, world, "ct_a1", "a2_first")
    read(client, world, "ct_a1", "a2_first")

    # Forty days later, looking at the last seven: the grant is still there, unreviewed.
    at(db, world, beijing(MONDAY + timedelta(days=40), 10))
    [found] = unusual(client, world, "?kind=emergency_access")
    assert found["id"] == f"emergency_access.{grant_id.hex}"
    assert found["actor_id"] == str(world["ct_a1"].id)
    assert found["student_id"] == str(world.students["a2_first"])
    assert found["count"] == 3  # the grant and two reads, each flagged emergency
    assert "missing" not in client.get(URL, headers=world["auditor"].headers).text

    # The emergency review itself: a note, sealed with the grant; no outcome.
    review(client, world, found["id"], {"outcome": "explained"}, 422)
    done = review(client, world, found["id"], {"note": "Confirmed with the school."}, 200)
    assert done["reviewed"] is True and done["outcome"] is None
    reviewed = client.get(
        "/api/v1/audit/emergency-access?reviewed=true", headers=world["auditor"].headers
    ).json()["items"]
    assert [(g["id"], g["review_note"]) for g in reviewed] == [
        (str(grant_id), "Confirmed with the school.")
    ]
    assert unusual(client, world, "?kind=emergency_access") == []
    review(client, world, found["id"], {"note": "again"}, 409)


def test_only_auditors_and_only_real_findings(client, world, db):
    at(db, world, beijing(MONDAY, 10))
    for who in ("counselor_a", "leader_a", "admin"):
        response = client.get(URL, headers=world[who].headers)
        assert response.status_code == 403
    response = client.post(
        f"{URL}/many_reads.{uuid.uuid4().hex}.2026090702/review",
        json={"outcome": "explained"},
        headers=world["counselor_a"].headers,
    )
    assert response.status_code == 403
    # Ids that name nothing (or nothing unusual) are "not found", and the probe is audited.
    quiet = world["ct_a1"].id.hex
    for finding_id in (
        f"many_reads.{quiet}.2026090702",
        f"off_hours.{quiet}.20260907",
        f"emergency_access.{uuid.uuid4().hex}",
        "many_reads.zz.1",
        "..",
    ):
        review(client, world, finding_id, {"outcome": "explained"}, 404)
    assert events(db)[-1].outcome == "deny"
    # The period is bounded and must be well formed.
    for query in ("?since=2026-01-01T00:00:00Z", "?since=2026-09-07T00:00:00"):
        assert client.get(URL + query, headers=world["auditor"].headers).status_code == 422


def test_the_auditor_page_lists_unusual_access_and_marks_it_reviewed(client, world, db):
    at(db, world, beijing(MONDAY, 22))
    read(client, world, "ct_a1", "a1_first")
    at(db, world, beijing(MONDAY, 23))
    sign_in(client, world["auditor"])
    html = client.get("/audit").text
    section = html.split('id="unusual-h"', 1)[1]
    finding_id = f"off_hours.{world['ct_a1'].id.hex}.20260907"
    assert finding_id in section and str(world["ct_a1"].id) in section
    assert "在校时间以外的访问" in section
    assert not re.search(r"测试学生|NO0000", section)
    response = post_form(
        client, f"/audit/unusual/{finding_id}/review", {"outcome": "bogus"}, from_page="/audit"
    )
    assert response.status_code == 422
    response = post_form(
        client, f"/audit/unusual/{finding_id}/review", {"outcome": "explained"}, from_page="/audit"
    )
    assert response.status_code == 303
    assert finding_id not in client.get("/audit").text.split('id="unusual-h"', 1)[1]
    assert events(db, "audit:unusual_review")[-1].resource_id == finding_id


def test_password_resets_by_another_person_are_reviewed_never_by_that_account(client, world, db):
    """A black-box finding: whoever resets an account's password receives its one-time
    password and can act as that person. Each reset is listed for review, and the account
    reset cannot settle its own (an administrator signed in as a reset auditor)."""
    from casemgr.authz import Role
    from tests.care.helpers import add_staff
    from tests.factories import issue_token

    at(db, world, beijing(MONDAY, 9))
    second = add_staff(db, world, "auditor.two", Role.AUDITOR, None)
    [(factor,)] = db.execute("SELECT totp_secret FROM users WHERE id = :u", {"u": db.id(second.id)})
    for account in (world["counselor_a"], second):
        response = client.post(
            f"/api/v1/users/{account.id}/reset-password", headers=world["admin"].headers
        )
        assert response.status_code == 200, response.text
    at(db, world, beijing(MONDAY, 10))
    resets = [i for i in unusual(client, world, "?kind=account_reset")]
    assert {i["account_id"] for i in resets} == {str(world["counselor_a"].id), str(second.id)}
    assert {i["actor_id"] for i in resets} == {str(world["admin"].id)}
    assert all(i["kind"] == "account_reset" and i["count"] == 1 for i in resets)
    [own] = [i for i in resets if i["account_id"] == str(second.id)]

    # Whoever signed in with the one-time password of the second auditor, and chose a
    # password and a second factor (the onboarding steps, taken as done here):
    db.execute(
        "UPDATE users SET password_change_required = :f, totp_secret = :t WHERE id = :u",
        {"f": False, "t": factor, "u": db.id(second.id)},
    )
    token = db.in_transaction(lambda session: issue_token(session, second.id))
    as_reset = {"Authorization": f"Bearer {token}"}
    refused = client.post(
        f"{URL}/{own['id']}/review", json={"outcome": "explained"}, headers=as_reset
    )
    assert refused.status_code == 403, refused.text
    assert events(db, "audit:unusual_review")[-1].outcome == "deny"
    review(client, world, own["id"], {"outcome": "follow_up"}, 200)
    assert [
        i["account_id"] for i in unusual(client, world, "?kind=account_reset&reviewed=false")
    ] == [str(world["counselor_a"].id)]
    # An id that names no reset is no finding.
    review(client, world, "account_reset.999999999", {"outcome": "explained"}, 404)
