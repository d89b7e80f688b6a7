"""Acceptance 4: the care summary counts live categories and hides what could identify.

School A holds 3 left-behind students and 40 of single-parent families: the 3 are shown
as suppressed, and neither the school's answer nor the county's lets anyone derive them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from casemgr.care.services import new_case_code, new_case_file, new_category
from casemgr.reports.services import Counts, county_cells
from casemgr.settings import Settings
from casemgr.students.models import Student
from tests.care.helpers import TODAY, events
from tests.factories import add_student

SUMMARY = "/api/v1/reports/care-summary"


def enrol_with_category(
    db: Any, class_id: uuid.UUID, first_n: int, count: int, *categories: str
) -> list[uuid.UUID]:
    """``count`` new students of a class, each holding ``categories`` (live)."""

    async def body(session: Any) -> list[uuid.UUID]:
        ids = []
        for n in range(first_n, first_n + count):
            student_id = await add_student(session, db.crypto, class_id, n)
            student = await session.get(Student, student_id)
            cipher = await db.crypto.cipher(session, student.data_key_id)
            case = new_case_file(
                cipher,
                student_id=student_id,
                code=new_case_code(),
                reason="Opened when a care category was recorded.",
                opened_on=TODAY,
                created_by=None,
            )
            session.add(case)
            await session.flush()
            for category in categories:
                session.add(
                    new_category(
                        cipher,
                        student_id=student_id,
                        case_id=case.id,
                        category=category,
                        since=TODAY - timedelta(days=100),
                        details=None,
                        review_on=None,
                        created_by=None,
                    )
                )
            ids.append(student_id)
        return ids

    return db.in_transaction(body)


def cells(answer: dict[str, Any]) -> dict[str, int | None]:
    assert all((c["count"] is None) == c["suppressed"] for c in answer["cells"])
    return {c["category"]: c["count"] for c in answer["cells"]}


def test_three_left_behind_students_cannot_be_derived(care, world, db):
    enrol_with_category(db, world.class_a1, 100, 3, "left_behind")
    enrol_with_category(db, world.class_a2, 200, 40, "single_parent")
    # School B: 12 left-behind, 15 single-parent, all shown in B's own report.
    enrol_with_category(db, world.class_b1, 300, 12, "left_behind")
    enrol_with_category(db, world.class_b1, 400, 15, "single_parent")

    for who in ("leader_a", "counselor_a"):
        school = care.ok(who, "GET", SUMMARY)
        assert set(school) == {"k", "school_id", "cells"}  # no total to subtract from
        assert school["k"] == 10 and school["school_id"] == str(world.school_a)
        assert cells(school) == {
            "orphan": None,
            "single_parent": 40,
            "disability": None,
            "financial_hardship": None,
            "left_behind": None,
        }
    admin_a = care.ok("admin", "GET", f"{SUMMARY}?school_id={world.school_a}")
    admin_b = care.ok("admin", "GET", f"{SUMMARY}?school_id={world.school_b}")
    assert cells(admin_a)["left_behind"] is None
    assert cells(admin_b)["left_behind"] == 12 and cells(admin_b)["single_parent"] == 15
    county = care.ok("admin", "GET", SUMMARY)
    assert county["school_id"] is None
    # The county's single-parent cell is the sum of two shown cells: shown.
    assert cells(county)["single_parent"] == 55
    # Its left-behind cell (15) minus school B's shown 12 would give school A's 3: hidden.
    assert cells(county)["left_behind"] is None
    # Whatever anyone can see, the 3 appears nowhere, and within a category (where cells
    # add up) no shown number minus others that are shown yields it.
    for category in cells(county):
        shown = [
            cells(answer)[category]
            for answer in (admin_a, admin_b, county)
            if cells(answer)[category] is not None
        ]
        assert 3 not in shown
        assert 3 not in {a - b for a in shown for b in shown}, category
    assert len(events(db, "report:read")) == 5


def test_counts_follow_live_memberships_only(care, world, db):
    students = enrol_with_category(db, world.class_a1, 100, 11, "orphan", "disability")
    answer = cells(care.ok("counselor_a", "GET", SUMMARY))
    assert answer["orphan"] == 11 and answer["disability"] == 11  # one student, two cells
    # Ending one membership through the API takes the student out of that cell.
    care_categories = db.execute(
        "SELECT id FROM care_categories WHERE student_id = :s", {"s": db.id(students[0])}
    )
    ids = [uuid.UUID(str(row[0])) for row in care_categories]
    ended = 0
    for category_id in ids:
        out = care.ok(
            "ct_a1",
            "POST",
            f"/api/v1/care-categories/{category_id}/end",
            {"ended_on": TODAY.isoformat(), "reason": "Reviewed."},
        )
        ended += out["category"] == "orphan"
        if out["category"] == "orphan":
            break
    assert ended == 1
    assert cells(care.ok("counselor_a", "GET", SUMMARY))["orphan"] == 10
    # An erased student counts nowhere.
    care.call(
        "leader_a",
        "POST",
        f"/api/v1/students/{students[1]}/erase",
        {"reason": "guardian_request"},
        expect=204,
    )
    answer = cells(care.ok("counselor_a", "GET", SUMMARY))
    assert answer["orphan"] is None and answer["disability"] == 10


def test_who_sees_which_report(care, world):
    care.call("leader_a", "GET", f"{SUMMARY}?school_id={world.school_b}", expect=404)
    care.call("counselor_a", "GET", f"{SUMMARY}?school_id={uuid.uuid4()}", expect=404)
    for who in ("ct_a1", "teacher_a", "auditor"):
        care.call(who, "GET", SUMMARY, expect=403)
    # A school's staff never get the county.
    assert care.ok("leader_a", "GET", SUMMARY)["school_id"] == str(world.school_a)


def test_k_is_configurable_but_never_below_five(tmp_path):
    base = {
        "CASEMGR_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "CASEMGR_KEYS_DIR": str(tmp_path),
    }
    assert Settings.from_env(base).report_min_cell == 10
    assert Settings.from_env({**base, "CASEMGR_REPORT_MIN_CELL": "5"}).report_min_cell == 5
    for low in ("4", "1", "0", "-3"):
        with pytest.raises(ValueError, match="CASEMGR_REPORT_MIN_CELL"):
            Settings.from_env({**base, "CASEMGR_REPORT_MIN_CELL": low})


def county(*schools: dict[str, int], k: int = 10) -> dict[str, int | None]:
    counts = Counts({uuid.uuid4(): Counter(s) for s in schools})
    return {c.category: c.count for c in county_cells(counts, k)}


def test_county_cells_hide_what_the_school_cells_would_give_away():
    # Every school cell shown: the county shows the total.
    assert county({"orphan": 10}, {"orphan": 25})["orphan"] == 35
    # Under k in the county: hidden.
    assert county({"orphan": 4}, {"orphan": 5})["orphan"] is None
    # One hidden school cell: the county would give it away.
    assert county({"orphan": 3}, {"orphan": 40})["orphan"] is None
    # Hidden cells summing to under k (zeros included) would give themselves away.
    assert county({"orphan": 0}, {"orphan": 0}, {"orphan": 40})["orphan"] is None
    assert county({"orphan": 4}, {"orphan": 5}, {"orphan": 40})["orphan"] is None
    # ...and so would hidden cells at their largest (each must be k - 1).
    assert county({"orphan": 9}, {"orphan": 9}, {"orphan": 40})["orphan"] is None
    # Two or more hidden cells whose sum pins none of them: the county is shown.
    assert county({"orphan": 4}, {"orphan": 8}, {"orphan": 40})["orphan"] == 52
    assert county({"orphan": 0}, {"orphan": 9}, {"orphan": 3}, {"orphan": 40})["orphan"] == 52
