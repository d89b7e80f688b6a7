"""Acceptance 1: a realistic term of the care programme, through the API, with time moving.

A class teacher records two categories for a student and the file opens; three teachers
are paired with the student (many_to_one); mentors log support with follow-up dates; the
class teacher visits every family of the class; tasks show what is due and overdue; a
category ends; the file closes and the mentors' reach ends with it.
"""

from __future__ import annotations

from datetime import timedelta

from casemgr.authz import Role
from tests.care.helpers import TODAY, add_staff, day, events, travel


def kinds(tasks: list[dict]) -> list[tuple[str, str, bool]]:
    return [(t["kind"], t["due_on"], t["overdue"]) for t in tasks]


def test_a_term_of_care(care, world, db):
    add_staff(db, world, "teacher_a2", Role.TEACHER, world.school_a)
    add_staff(db, world, "teacher_a3", Role.TEACHER, world.school_a)
    student = str(world.students["a1_first"])

    # The class teacher records two categories: the first opens the file, the second joins it.
    first = care.add_category("ct_a1", "a1_first", "left_behind").json()
    second = care.add_category("ct_a1", "a1_first", "financial_hardship", review_on=day(60)).json()
    assert first["case_id"] == second["case_id"]
    case_id = first["case_id"]
    assert len(events(db, "case:open")) == 1
    file = care.case("ct_a1", case_id).json()
    assert file["status"] == "open" and file["student_id"] == student
    assert file["opened_on"] == day(0) and file["review_on"] == day(90)
    assert {c["category"] for c in file["care_categories"]} == {
        "left_behind",
        "financial_hardship",
    }
    assert all(c["ended_on"] is None for c in file["care_categories"])
    # Opening a second file while this one is open is a conflict that names it.
    conflict = care.open_case("ct_a1", "a1_first", expect=409).json()
    assert conflict["case_id"] == case_id

    # A support plan.
    care.call(
        "ct_a1",
        "PATCH",
        f"/api/v1/cases/{case_id}",
        {"support_plan": "Reading mentor twice a week; call home monthly."},
        expect=200,
    )

    # Three teachers are paired with the student, one of them leading.
    pairing = care.pair(
        "ct_a1", case_id, ["teacher_a", "teacher_a2", "teacher_a3"], lead="teacher_a2"
    ).json()
    pairings = care.ok("teacher_a3", "GET", f"/api/v1/cases/{case_id}/pairings")["items"]
    assert [p["id"] for p in pairings] == [pairing["id"]]
    assert pairings[0]["mode"] == "many_to_one"
    assert pairings[0]["lead_id"] == str(world["teacher_a2"].id)
    assert set(pairings[0]["mentor_ids"]) == {
        str(world[m].id) for m in ("teacher_a", "teacher_a2", "teacher_a3")
    }

    # Mentors log support with follow-up dates.
    care.log("teacher_a", case_id, kind="academic", notes="Maths homework.", follow_up_on=day(7))
    assert ("support_follow_up", day(7), False) in kinds(care.tasks("teacher_a"))
    # The class teacher visits every family of the class.
    for name in ("a1_first", "a1_second"):
        care.visit("ct_a1", name, participants=("teacher_a",))
    progress = care.ok("ct_a1", "GET", "/api/v1/me/visit-progress")
    assert progress["items"] == [
        {
            "scope": "class",
            "class_id": str(world.class_a1),
            "class_name": "七年级1班",
            "required_per_student": 1,
            "students": 2,
            "students_done": 2,
            "visits": 2,
        }
    ]
    ct_tasks = kinds(care.tasks("ct_a1"))
    assert [k for k, _, _ in ct_tasks if k == "home_visit"] == []
    assert ("case_review", day(90), False) in ct_tasks
    assert ("category_review", day(60), False) in ct_tasks
    # The mentor took part in the visit of their paired student: nothing owed either.
    assert "home_visit" not in [k for k, _, _ in kinds(care.tasks("teacher_a"))]
    assert [k for k, _, _ in kinds(care.tasks("teacher_a3"))] == ["home_visit"]

    # A week and a bit later the follow-up is overdue...
    travel(db, world, TODAY + timedelta(days=9))
    assert ("support_follow_up", day(7), True) in kinds(care.tasks("teacher_a"))
    # ...until another mentor writes a later log for the file.
    care.log("teacher_a2", case_id, kind="conversation", occurred_on=day(9), follow_up_on=day(21))
    assert "support_follow_up" not in [k for k, _, _ in kinds(care.tasks("teacher_a"))]
    assert ("support_follow_up", day(21), False) in kinds(care.tasks("teacher_a2"))

    # Two months on, the category review is overdue; the class teacher ends a category.
    travel(db, world, TODAY + timedelta(days=62))
    assert ("category_review", day(60), True) in kinds(care.tasks("ct_a1"))
    assert ("support_follow_up", day(21), True) in kinds(care.tasks("teacher_a2"))
    ended = care.ok(
        "ct_a1",
        "POST",
        f"/api/v1/care-categories/{second['id']}/end",
        {"ended_on": day(62), "reason": "The family's income is stable again."},
    )
    assert ended["ended_on"] == day(62)
    assert "category_review" in [k for k, _, _ in kinds(care.tasks("ct_a1"))]  # the other one
    assert day(60) not in [d for k, d, _ in kinds(care.tasks("ct_a1")) if k == "category_review"]
    file = care.case("ct_a1", case_id).json()
    by_category = {c["category"]: c for c in file["care_categories"]}
    assert by_category["financial_hardship"]["ended_on"] == day(62)  # history kept
    assert by_category["left_behind"]["ended_on"] is None

    # The file closes; its pairing ends with it, and with it the mentors' reach.
    closed = care.ok(
        "ct_a1", "POST", f"/api/v1/cases/{case_id}/close", {"reason": "Goals reached."}
    )
    assert closed["status"] == "closed" and closed["closed_on"] == day(62)
    care.case("teacher_a2", case_id, expect=404)
    assert care.tasks("teacher_a2") == [] or all(
        t["kind"] == "home_visit" for t in care.tasks("teacher_a2")
    )
    assert "case_review" not in [k for k, _, _ in kinds(care.tasks("ct_a1"))]

    timeline = care.ok("ct_a1", "GET", f"/api/v1/cases/{case_id}/timeline")["items"]
    assert timeline[0]["kind"] == "case_closed"
    assert timeline[0]["summary"] == "File closed: Goals reached."
    assert timeline[-1]["kind"] == "case_opened"
    dates = [item["at"] for item in timeline]
    assert dates == sorted(dates, reverse=True)
    assert {item["kind"] for item in timeline} == {
        "case_opened",
        "category_added",
        "pairing_started",
        "support_log",
        "home_visit",
        "category_ended",
        "pairing_ended",
        "case_closed",
    }
    assert "Support (academic): Maths homework." in [item["summary"] for item in timeline]

    # The student can get a new file later; the live category moves into it.
    reopened = care.open_case("ct_a1", "a1_first").json()
    file = care.case("ct_a1", reopened["id"]).json()
    assert [c["category"] for c in file["care_categories"]] == ["left_behind"]
    listed = care.ok("ct_a1", "GET", "/api/v1/cases")["items"]
    assert {(c["id"], c["status"]) for c in listed} == {
        (case_id, "closed"),
        (reopened["id"], "open"),
    }
