"""Acceptance 3 (SPEC P3): nothing a class or a school sees in common labels a child.

Rosters, details, lookups, visit progress and the school's report answer the same fields
for every student and do not change when a student enters the care programme; case codes
are random and carry nothing of the category, the class or the date.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from casemgr.care import services
from casemgr.care.models import CATEGORIES
from casemgr.care.services import new_case_code
from casemgr.students.services import CODE_ALPHABET
from tests.care.helpers import TODAY, travel

CODE = re.compile(rf"^[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}$")


def common_views(care: Any, world: Any) -> dict[str, Any]:
    """What a class or a school sees in common about its students."""
    a1 = world.class_a1
    views: dict[str, Any] = {}
    for who in ("ct_a1", "counselor_a", "leader_a"):
        views[f"roster/{who}"] = care.ok(who, "GET", f"/api/v1/classes/{a1}/students")
        views[f"schools/{who}"] = care.ok(who, "GET", f"/api/v1/schools/{world.school_a}/classes")
    for name in ("a1_first", "a1_second"):
        views[f"details/{name}"] = care.ok("ct_a1", "GET", f"/api/v1/students/{care.student(name)}")
    for number in ("NO00001", "NO00002"):
        views[f"lookup/{number}"] = care.ok(
            "counselor_a", "POST", "/api/v1/students/lookup", {"student_no": number}
        )
    views["visit-progress"] = care.ok(
        "leader_a", "GET", f"/api/v1/schools/{world.school_a}/visit-progress"
    )
    views["report"] = care.ok("leader_a", "GET", "/api/v1/reports/care-summary")
    views["me"] = care.ok("ct_a1", "GET", "/api/v1/me")
    return views


def test_entering_the_care_programme_changes_nothing_in_common_views(care, world):
    before = common_views(care, world)
    case_id = care.add_category("ct_a1", "a1_first", "orphan").json()["case_id"]
    care.add_category("ct_a1", "a1_first", "disability")
    care.pair("counselor_a", case_id, ["teacher_a"])
    care.log("teacher_a", case_id, notes="Reading together.")
    care.visit("teacher_a", "a1_first", notes="Visit by the mentor.")
    care.ok(
        "counselor_a", "POST", f"/api/v1/cases/{case_id}/guidance", {"text": "Be patient."}, 201
    )
    after = common_views(care, world)
    assert after == before
    # And none of them but the (suppressed) report even names a category.
    text = repr({view: answer for view, answer in after.items() if view != "report"})
    assert not [c for c in CATEGORIES if c in text]


def test_every_student_answers_the_same_fields(care, world):
    care.add_category("ct_a1", "a1_first", "left_behind")
    roster = care.ok("ct_a1", "GET", f"/api/v1/classes/{world.class_a1}/students")["items"]
    assert len(roster) == 2
    assert len({frozenset(entry) for entry in roster}) == 1
    assert set(roster[0]) == {"id", "code", "full_name", "student_no"}
    details = [
        care.ok("ct_a1", "GET", f"/api/v1/students/{care.student(n)}")
        for n in ("a1_first", "a1_second")
    ]
    assert set(details[0]) == set(details[1])
    # A home visit says nothing about care status: same answer, same shape, no file.
    for name in ("a1_first", "a1_second"):
        care.visit("ct_a1", name)
    visits = [
        care.ok("ct_a1", "GET", f"/api/v1/students/{care.student(n)}/home-visits")["items"]
        for n in ("a1_first", "a1_second")
    ]
    assert set(visits[0][0]) == set(visits[1][0])
    assert "case_id" not in visits[0][0]
    # A visit opens no file.
    files = care.ok("ct_a1", "GET", "/api/v1/cases")["items"]
    assert [f["student_id"] for f in files] == [str(care.student("a1_first"))]


def test_case_codes_are_random_and_shaped_like_student_codes():
    codes = [new_case_code() for _ in range(20_000)]
    assert all(CODE.match(code) for code in codes)
    assert len(set(codes)) == len(codes)
    letters = [code.replace("-", "") for code in codes]
    expected = len(codes) / len(CODE_ALPHABET)
    for position in range(8):
        counts = Counter(code[position] for code in letters)
        assert set(counts) == set(CODE_ALPHABET)
        # Uniform at every position (a bound about 6 standard deviations wide).
        assert all(0.75 * expected < n < 1.25 * expected for n in counts.values()), position
    # Positions are independent: neighbours agree as often as chance says (1 in 30).
    same = sum(c[i] == c[i + 1] for c in letters for i in range(7))
    pairs = 7 * len(letters)
    assert 0.8 / len(CODE_ALPHABET) < same / pairs < 1.2 / len(CODE_ALPHABET)


def test_the_api_takes_codes_from_the_random_generator_only(care, world, db, monkeypatch):
    # Files for different classes, categories and dates: nothing shared but the shape.
    made = [care.add_category("ct_a1", "a1_first", "orphan").json()["case_id"]]
    made.append(care.open_case("counselor_a", "a2_first").json()["id"])
    travel(db, world, TODAY + timedelta(days=40))
    made.append(care.add_category("ct_a1", "a1_second", "left_behind").json()["case_id"])
    codes = [care.case("counselor_a", case_id).json()["code"] for case_id in made]
    assert all(CODE.match(code) for code in codes) and len(set(codes)) == 3
    student_codes = {
        s["code"]
        for s in care.ok("counselor_a", "GET", f"/api/v1/classes/{world.class_a1}/students")[
            "items"
        ]
    }
    assert not set(codes) & student_codes
    # What the route stores is exactly what the generator gave: no input goes into it.
    monkeypatch.setattr(services, "new_case_code", lambda: "ZZZZ-2222")
    opened = care.open_case("ct_b1", "b1_first").json()
    assert opened["code"] == "ZZZZ-2222"


@pytest.mark.parametrize("word", ["问题学生", "problem student", "troubled student"])
def test_no_stigmatising_word_in_the_care_answers(care, world, word):
    case_id = care.add_category("ct_a1", "a1_first", "orphan").json()["case_id"]
    care.log("ct_a1", case_id)
    for path in (f"/api/v1/cases/{case_id}", f"/api/v1/cases/{case_id}/timeline"):
        assert word.casefold() not in care.call("ct_a1", "GET", path).text.casefold()
    problem = care.call("ct_a1", "POST", "/api/v1/cases", {"student_id": "x"}).text
    assert word.casefold() not in problem.casefold()
