"""Follow-up tasks (derived and explicit) and home-visit requirements, with time moving."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.authz import Permission
from casemgr.care.tasks import add_task
from casemgr.errors import InvalidInput
from tests.care.helpers import TERM_START, TODAY, day, events, travel
from tests.care.markers import context

YEAR_END = "2027-07-31"


def task_kinds(tasks: list[dict[str, Any]]) -> list[str]:
    return sorted(t["kind"] for t in tasks)


def test_visit_requirements_drive_progress_and_tasks(care, world, db):
    requirement = care.ok(
        "leader_a",
        "PUT",
        f"/api/v1/schools/{world.school_a}/visit-requirements",
        {"class_teacher_visits": 2, "mentor_visits": 1},
    )
    assert requirement == {
        "school_id": str(world.school_a),
        "school_year": "2026-2027",
        "class_teacher_visits": 2,
        "mentor_visits": 1,
    }
    assert (
        care.ok("leader_a", "GET", f"/api/v1/schools/{world.school_a}/visit-requirements")
        == requirement
    )
    owed = [t for t in care.tasks("ct_a1") if t["kind"] == "home_visit"]
    assert sorted((t["student_id"], t["remaining"], t["due_on"]) for t in owed) == sorted(
        (str(care.student(n)), 2, YEAR_END) for n in ("a1_first", "a1_second")
    )
    # Counselors and leaders record no visits (SPEC §3).
    care.visit("counselor_a", "a1_first", expect=403)
    care.visit("leader_a", "a1_first", expect=403)
    # A visit by a colleague with the class teacher taking part counts for the teacher.
    case_id = care.open_case("counselor_a", "a1_first").json()["id"]
    care.pair("counselor_a", case_id, ["teacher_a"])
    care.visit("teacher_a", "a1_first", participants=("ct_a1",))
    owed = {
        t["student_id"]: t["remaining"] for t in care.tasks("ct_a1") if t["kind"] == "home_visit"
    }
    assert owed == {str(care.student("a1_first")): 1, str(care.student("a1_second")): 2}
    progress = care.ok("leader_a", "GET", f"/api/v1/schools/{world.school_a}/visit-progress")
    by_class = {item["class_id"]: item for item in progress["items"]}
    assert by_class[str(world.class_a1)]["visits"] == 1
    assert by_class[str(world.class_a1)]["students_done"] == 0
    assert by_class[str(world.class_a2)]["students"] == 1
    care.visit("ct_a1", "a1_first", mode="video")
    care.visit("ct_a1", "a1_second")
    care.visit("ct_a1", "a1_second", mode="phone")
    assert [t for t in care.tasks("ct_a1") if t["kind"] == "home_visit"] == []
    progress = care.ok("leader_a", "GET", f"/api/v1/schools/{world.school_a}/visit-progress")
    a1 = next(i for i in progress["items"] if i["class_id"] == str(world.class_a1))
    assert (a1["students"], a1["students_done"], a1["visits"]) == (2, 2, 4)
    # A past school year cannot be set, a future one can.
    care.call(
        "leader_a",
        "PUT",
        f"/api/v1/schools/{world.school_a}/visit-requirements",
        {"class_teacher_visits": 1, "mentor_visits": 1, "school_year": "2025-2026"},
        expect=422,
    )
    care.call(
        "leader_a",
        "PUT",
        f"/api/v1/schools/{world.school_a}/visit-requirements",
        {"class_teacher_visits": 3, "mentor_visits": 2, "school_year": "2027-2028"},
        expect=200,
    )


def test_mentors_owe_visits_to_their_paired_students(care, world, db):
    case_id = care.open_case("counselor_a", "a2_first").json()["id"]
    assert care.tasks("teacher_a") == []
    care.pair("counselor_a", case_id, ["teacher_a"])
    tasks = care.tasks("teacher_a")
    assert [(t["kind"], t["student_id"], t["remaining"]) for t in tasks] == [
        ("home_visit", str(care.student("a2_first")), 1)
    ]
    progress = care.ok("teacher_a", "GET", "/api/v1/me/visit-progress")["items"]
    assert progress == [
        {
            "scope": "paired",
            "required_per_student": 1,
            "students": 1,
            "students_done": 0,
            "visits": 0,
        }
    ]
    care.visit("ct_a1", "a1_first", participants=("teacher_a",))  # another student: no count
    care.visit("teacher_a", "a2_first")
    assert care.tasks("teacher_a") == []


def test_reviews_come_due_and_overdue(care, world, db):
    case_id = care.add_category("ct_a1", "a1_first", "orphan", review_on=day(30)).json()["case_id"]
    care.call("ct_a1", "PATCH", f"/api/v1/cases/{case_id}", {"review_on": day(20)}, expect=200)
    reviews = {
        t["kind"]: (t["due_on"], t["overdue"], t.get("case_id"))
        for t in care.tasks("ct_a1")
        if t["kind"] != "home_visit"
    }
    assert reviews == {
        "case_review": (day(20), False, case_id),
        "category_review": (day(30), False, case_id),
    }
    # The counselor writes to every file of the school: the case review is theirs too;
    # categories are the class teacher's to review.
    assert task_kinds(care.tasks("counselor_a")) == ["case_review"]
    travel(db, world, TODAY + timedelta(days=25))
    overdue = {t["kind"]: t["overdue"] for t in care.tasks("ct_a1") if t["kind"] != "home_visit"}
    assert overdue == {"case_review": True, "category_review": False}
    # Due today is not overdue.
    travel(db, world, TODAY + timedelta(days=30))
    overdue = {t["kind"]: t["overdue"] for t in care.tasks("ct_a1") if t["kind"] != "home_visit"}
    assert overdue == {"case_review": True, "category_review": False}
    travel(db, world, TODAY + timedelta(days=31))
    assert all(t["overdue"] for t in care.tasks("ct_a1") if t["kind"] != "home_visit")


def test_explicit_tasks_are_assigned_listed_and_done(care, world, db, settings):
    case_id = care.open_case("counselor_a", "a1_first").json()["id"]

    async def assign(session: AsyncSession) -> uuid.UUID:
        ctx = await context(db, session, world["counselor_a"].token, settings)
        access = await ctx.student(Permission.CASE_READ, care.student("a1_first"))
        try:
            await add_task(
                ctx, access, assignee_id=world["ct_a1"].id, kind="nonsense", due_on=TODAY
            )
        except InvalidInput as exc:
            assert exc.extra["errors"][0]["field"] == "kind"
        task = await add_task(
            ctx,
            access,
            assignee_id=world["ct_a1"].id,
            kind="urgent_review",
            due_on=TODAY + timedelta(days=1),
            note="Speak with the student today.",
            case_id=uuid.UUID(case_id),
        )
        await session.commit()
        return task.id

    task_id = db.run(lambda sessions: _with(sessions, assign))
    created = events(db, "task:create")[-1]
    assert created.student_id == care.student("a1_first") and "Speak" not in (created.detail or "")
    mine = [t for t in care.tasks("ct_a1") if t["kind"] == "urgent_review"]
    assert mine == [
        {
            "kind": "urgent_review",
            "due_on": day(1),
            "overdue": False,
            "case_id": case_id,
            "student_id": str(care.student("a1_first")),
            "id": str(task_id),
        }
    ]
    # Nobody else sees or completes it.
    assert all(t["kind"] != "urgent_review" for t in care.tasks("counselor_a"))
    care.call("counselor_a", "POST", f"/api/v1/me/tasks/{task_id}/done", expect=404)
    care.call("ct_a1", "POST", f"/api/v1/me/tasks/{uuid.uuid4()}/done", expect=404)
    care.call("ct_a1", "POST", f"/api/v1/me/tasks/{task_id}/done", expect=204)
    care.call("ct_a1", "POST", f"/api/v1/me/tasks/{task_id}/done", expect=409)
    assert all(t["kind"] != "urgent_review" for t in care.tasks("ct_a1"))
    assert [e.outcome for e in events(db, "task:done")] == ["allow"]


async def _with(sessions: Any, body: Any) -> Any:
    async with sessions() as session:
        return await body(session)


def test_a_follow_up_belongs_to_its_author_and_ends_with_a_later_log(care, world, db):
    case_id = care.open_case("ct_a1", "a1_first").json()["id"]
    care.pair("ct_a1", case_id, ["teacher_a"])
    care.log("ct_a1", case_id, follow_up_on=day(3))
    assert [t["due_on"] for t in care.tasks("ct_a1") if t["kind"] == "support_follow_up"] == [
        day(3)
    ]
    assert all(t["kind"] != "support_follow_up" for t in care.tasks("teacher_a"))
    travel(db, world, TODAY + timedelta(days=1))
    care.log("teacher_a", case_id, occurred_on=day(1))  # no follow-up date: all done
    assert all(t["kind"] != "support_follow_up" for t in care.tasks("ct_a1"))
    # Written a minute later: "later" is the order logs are written in.
    travel(db, world, TERM_START + timedelta(days=1, minutes=1))
    care.log("teacher_a", case_id, occurred_on=day(1), follow_up_on=day(2))
    travel(db, world, date(2026, 9, 10))
    assert [
        (t["due_on"], t["overdue"])
        for t in care.tasks("teacher_a")
        if t["kind"] == "support_follow_up"
    ] == [(day(2), True)]
