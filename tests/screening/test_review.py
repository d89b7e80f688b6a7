"""The review queue and reviews: ordering, outcomes, the case file, guidance and tasks;
withdrawal (acceptance 4) and expiry (acceptance 6, time-controlled)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from casemgr import clock
from casemgr.screening.services import add_months
from tests.screening.helpers import (
    add_students,
    consent,
    create_round,
    fresh_token,
    grant_all,
    result_ids,
    table,
    upload,
)

# PHQ-9 answers and where each lands.
SEVERE = [3, 3, 3, 3, 2, 2, 2, 2, 0]  # 20 severe
MODERATE_CRITICAL = [2, 2, 2, 2, 1, 0, 0, 0, 1]  # 10 moderate, item 9 -> critical_item
MODERATELY_SEVERE = [2, 2, 2, 2, 2, 2, 2, 1, 0]  # 15 moderately severe
MINIMAL_CRITICAL = [0, 0, 0, 0, 0, 0, 0, 0, 1]  # 1 minimal, critical_item: needs review
BELOW = [1, 1, 0, 0, 0, 0, 0, 0, 0]  # 2 minimal: below threshold
MODERATE = [2, 2, 2, 2, 2, 0, 0, 0, 0]  # 10 moderate


@pytest.fixture
def imported(client, db, world) -> dict[str, Any]:
    """Five students of A1 with PHQ-9 results; number -> (student id, result id)."""
    numbers = add_students(db, world.class_a1, 5, prefix="R")
    round_id = create_round(client, world)
    grant_all(db, round_id, list(numbers.values()))
    answers = [SEVERE, MODERATE_CRITICAL, MODERATELY_SEVERE, MINIMAL_CRITICAL, BELOW]
    response = upload(client, world, round_id, table(list(zip(numbers, answers, strict=True))))
    assert response.status_code == 200, response.text
    stored = result_ids(db, round_id)
    ids = [(numbers[n], stored[numbers[n]]) for n in numbers]
    return {"round_id": round_id, "ids": ids}


def queue(client: Any, world: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/screening/review-queue", headers=world["counselor_a"].headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def review(client: Any, world: Any, result_id: Any, **body: Any) -> Any:
    return client.post(
        f"/api/v1/screening/results/{result_id}/review",
        json={"notes": "谈话记录", **body},
        headers=world["counselor_a"].headers,
    )


def test_the_queue_puts_critical_items_first_then_severity(client, world, imported):
    (severe, critical, mod_severe, minimal_critical, below) = [r for _, r in imported["ids"]]
    items = queue(client, world)
    assert [i["result_id"] for i in items] == [
        str(critical),  # critical item, moderate band
        str(minimal_critical),  # critical item, minimal band
        str(severe),
        str(mod_severe),
    ]
    assert items[0] == {
        "result_id": str(critical),
        "student_id": str(imported["ids"][1][0]),
        "round_id": imported["round_id"],
        "instrument": "phq9",
        "band": "moderate",
        "total": 10,
        "flags": ["critical_item"],
        "status": "pending_review",
        "administered_on": items[0]["administered_on"],
    }
    assert str(below) not in {i["result_id"] for i in items}


def test_severity_compares_bands_across_instruments(client, db, world):
    """GAD-7's top band ranks with PHQ-9's top band, above PHQ-9's moderately severe."""
    numbers = add_students(db, world.class_a2, 3, prefix="X")
    n1, n2, n3 = numbers
    phq, gad = create_round(client, world), create_round(client, world, instrument="gad7")
    grant_all(db, phq, [numbers[n1], numbers[n2]])
    grant_all(db, gad, [numbers[n3]])
    assert (
        upload(client, world, phq, table([(n1, MODERATELY_SEVERE), (n2, MODERATE)])).status_code
        == 200
    )
    assert (
        upload(client, world, gad, table([(n3, [3, 3, 3, 3, 3, 0, 0])], items=7)).status_code == 200
    )
    order = [(i["instrument"], i["band"]) for i in queue(client, world)]
    assert order == [("gad7", "severe"), ("phq9", "moderately_severe"), ("phq9", "moderate")]


def test_support_opens_the_file_and_gives_teachers_the_guidance(client, world, imported):
    student_id, result_id = imported["ids"][0]
    response = review(
        client, world, result_id, outcome="support", guidance_for_teachers="每天课后关心一下。"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "reviewed" and body["result_id"] == str(result_id)
    case_id = body["case_id"]
    got = client.get(
        f"/api/v1/screening/results/{result_id}", headers=world["counselor_a"].headers
    ).json()
    assert got["status"] == "reviewed"
    assert got["review"]["outcome"] == "support"
    assert got["review"]["notes"] == "谈话记录"
    assert got["review"]["guidance_for_teachers"] == "每天课后关心一下。"
    assert got["review"]["case_id"] == case_id
    assert got["review"]["reviewed_by"] == str(world["counselor_a"].id)
    assert str(result_id) not in {i["result_id"] for i in queue(client, world)}
    case = client.get(f"/api/v1/cases/{case_id}", headers=world["ct_a1"].headers).json()
    assert case["student_id"] == str(student_id)
    assert [g["text"] for g in case["guidance"]] == ["每天课后关心一下。"]
    # No immediate task for the class teacher on ``support``.
    tasks = client.get("/api/v1/me/tasks", headers=world["ct_a1"].headers).json()["items"]
    assert not [t for t in tasks if t["kind"] == "urgent_review"]


def test_urgent_links_the_open_file_and_tasks_the_class_teacher_today(client, world, imported):
    student_id, result_id = imported["ids"][1]
    opened = client.post(
        "/api/v1/cases",
        json={"student_id": str(student_id), "reason": "班主任发起"},
        headers=world["ct_a1"].headers,
    )
    assert opened.status_code == 201, opened.text
    response = review(
        client, world, result_id, outcome="urgent", guidance_for_teachers="今天请联系家长。"
    )
    assert response.status_code == 200, response.text
    assert response.json()["case_id"] == opened.json()["id"]  # linked, not a second file
    tasks = client.get("/api/v1/me/tasks", headers=world["ct_a1"].headers).json()["items"]
    urgent = [t for t in tasks if t["kind"] == "urgent_review"]
    assert [(t["due_on"], t.get("case_id"), t.get("student_id")) for t in urgent] == [
        (clock.today().isoformat(), opened.json()["id"], str(student_id))
    ]
    others = client.get("/api/v1/me/tasks", headers=world["ct_b1"].headers).json()["items"]
    assert not [t for t in others if t["kind"] == "urgent_review"]


def test_monitor_needs_a_recheck_date_that_becomes_the_counselors_task(client, world, imported):
    _, result_id = imported["ids"][2]
    missing = review(client, world, result_id, outcome="monitor")
    assert missing.status_code == 422
    assert missing.json()["errors"] == [
        {"field": "recheck_on", "message": "a monitor outcome needs a re-check date"}
    ]
    recheck = clock.today() + timedelta(days=30)
    response = review(client, world, result_id, outcome="monitor", recheck_on=recheck.isoformat())
    assert response.status_code == 200, response.text
    assert "case_id" not in response.json()
    tasks = client.get("/api/v1/me/tasks", headers=world["counselor_a"].headers).json()["items"]
    assert ("screening_recheck", recheck.isoformat()) in {(t["kind"], t["due_on"]) for t in tasks}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"outcome": "no_concern", "guidance_for_teachers": "x"}, "guidance_for_teachers"),
        ({"outcome": "refer", "guidance_for_teachers": "x"}, "guidance_for_teachers"),
        ({"outcome": "support", "notes": "   "}, "notes"),
        ({"outcome": "monitor", "recheck_on": "2020-01-01"}, "recheck_on"),
        ({"outcome": "support", "notes": "a\u202eb"}, "notes"),
        ({"outcome": "escalate"}, "outcome"),
    ],
)
def test_bad_reviews_are_refused_naming_the_field(client, world, imported, body, field):
    _, result_id = imported["ids"][0]
    response = review(client, world, result_id, **body)
    assert response.status_code == 422, response.text
    assert field in response.text
    got = client.get(
        f"/api/v1/screening/results/{result_id}", headers=world["counselor_a"].headers
    ).json()
    assert got["review"] is None and got["status"] == "pending_review"


def test_a_review_can_be_revised(client, world, imported):
    _, result_id = imported["ids"][0]
    recheck = (clock.today() + timedelta(days=14)).isoformat()
    assert (
        review(client, world, result_id, outcome="monitor", recheck_on=recheck).status_code == 200
    )
    response = review(client, world, result_id, outcome="refer")
    assert response.status_code == 200
    got = client.get(
        f"/api/v1/screening/results/{result_id}", headers=world["counselor_a"].headers
    ).json()
    assert got["review"]["outcome"] == "refer"


def test_withdrawing_consent_hides_the_result_everywhere(client, db, world, imported):
    """Acceptance 4: out of the queue, the result route and reviews; a new grant (the
    latest decision governs) shows it again; retention erases what stays withdrawn."""
    student_id, result_id = imported["ids"][0]
    assert str(result_id) in {i["result_id"] for i in queue(client, world)}
    assert consent(client, world, imported["round_id"], student_id, "withdrawn").status_code == 201
    assert str(result_id) not in {i["result_id"] for i in queue(client, world)}
    counselor = world["counselor_a"].headers
    assert (
        client.get(f"/api/v1/screening/results/{result_id}", headers=counselor).status_code == 404
    )
    assert review(client, world, result_id, outcome="no_concern").status_code == 404
    # The sealed row is still there until retention runs.
    assert student_id in result_ids(db, imported["round_id"])
    assert consent(client, world, imported["round_id"], student_id, "granted").status_code == 201
    assert str(result_id) in {i["result_id"] for i in queue(client, world)}
    assert consent(client, world, imported["round_id"], student_id, "declined").status_code == 201
    assert str(result_id) not in {i["result_id"] for i in queue(client, world)}
    outcomes = run_retention(db)
    assert outcomes["screening_results"].applied == 1
    assert student_id not in result_ids(db, imported["round_id"])
    assert len(result_ids(db, imported["round_id"])) == 4


def run_retention(db: Any, dry_run: bool = False) -> dict[str, Any]:
    from casemgr.care.retention import run_retention as run

    # The default rules: the care programme's and screening's, as `retention run` applies.
    return db.run(lambda sessions: run(sessions, db.crypto, db.settings, dry_run=dry_run))


def test_a_result_older_than_twelve_months_expires(client, db, world, imported):
    """Acceptance 6 (time-controlled): twelve months after administration a result is
    expired: out of the queue and the result route, and erased by retention."""
    _, result_id = imported["ids"][0]
    assert len(queue(client, world)) == 4
    administered = client.get(
        f"/api/v1/screening/results/{result_id}", headers=world["counselor_a"].headers
    ).json()["administered_on"]
    clock.set_offset(timedelta(days=365 - 3))  # eleven and a bit months later: still in use
    fresh_token(db, world, "counselor_a")
    assert len(queue(client, world)) == 4
    clock.set_offset(timedelta(days=366 + 2))
    fresh_token(db, world, "counselor_a")
    expires = add_months(date.fromisoformat(administered), 12)
    assert clock.today() >= expires
    assert queue(client, world) == []
    response = client.get(
        f"/api/v1/screening/results/{result_id}", headers=world["counselor_a"].headers
    )
    assert response.status_code == 404
    assert run_retention(db, dry_run=True)["screening_results"].due == 5
    assert len(result_ids(db, imported["round_id"])) == 5
    outcomes = run_retention(db)
    assert outcomes["screening_results"].applied == 5
    assert result_ids(db, imported["round_id"]) == {}
    erased = db.execute("SELECT detail FROM audit_events WHERE action = 'screening_result:erase'")
    assert erased and '"expired":5' in erased[0][0]
