"""A guardian's request to see what is held (PIPL Art. 45): the whole record as JSON."""

from __future__ import annotations

from typing import Any

from casemgr.authz import Permission
from casemgr.care import records
from tests.care.helpers import events
from tests.care.markers import TEXT, write_whole_record


def test_the_whole_record_under_a_neutral_name(care, world, db, settings):
    written = write_whole_record(care, world, db, settings, "a1_first")
    path = f"/api/v1/students/{written.student_id}/export"
    code = care.ok("ct_a1", "GET", f"/api/v1/students/{written.student_id}")["code"]
    for who in ("ct_a1", "counselor_a"):
        r = care.call(who, "GET", path, expect=200)
        assert r.headers["content-disposition"] == f'attachment; filename="student-{code}.json"'
        assert r.headers["cache-control"] == "no-store"
        document = r.json()
        # Screening results are held for counselors' eyes only.
        assert set(document) - {"screening"} == {
            "exported_at",
            "student",
            "care_categories",
            "case_files",
            "home_visits",
        }
        assert ("screening" in document) == (who == "counselor_a")
        assert document["student"]["full_name"] == "测试学生001"
        assert sorted(c["category"] for c in document["care_categories"]) == [
            "financial_hardship",
            "left_behind",
        ]
        ended = next(c for c in document["care_categories"] if c["ended_on"])
        assert ended["end_reason"] == TEXT["category_end_reason"]
        (file,) = document["case_files"]
        assert file["code"] and file["status"] == "closed"
        assert file["open_reason"] == TEXT["open_reason"]
        assert file["close_reason"] == TEXT["close_reason"]
        assert file["support_plan"] == TEXT["support_plan"]
        assert [p["goals"] for p in file["pairings"]] == [TEXT["goals"]]
        assert [log["notes"] for log in file["support_logs"]] == [TEXT["log_notes"]]
        assert [g["text"] for g in file["guidance"]] == [TEXT["guidance"]]
        assert [v["notes"] for v in document["home_visits"]] == [TEXT["visit_notes"]]
        event = events(db, "student:export")[-1]
        assert event.actor_id == world[who].id and event.student_id == written.student_id
    for who, status in (
        ("teacher_a", 403),
        ("leader_a", 403),
        ("admin", 403),
        ("auditor", 403),
        ("ct_b1", 404),
    ):
        care.call(who, "GET", path, expect=status)


def test_sections_other_features_add_follow_their_own_permission(care, world, monkeypatch):
    async def screening(ctx: Any, access: Any) -> list[dict[str, str]]:
        return [{"instrument": "phq9", "student": str(access.id)}]

    monkeypatch.setattr(
        records,
        "EXPORT_SECTIONS",
        (("screening", Permission.SCREENING_RESULT_READ, screening),),
    )
    path = f"/api/v1/students/{care.student('a1_first')}/export"
    assert care.ok("counselor_a", "GET", path)["screening"] == [
        {"instrument": "phq9", "student": str(care.student("a1_first"))}
    ]
    assert "screening" not in care.ok("ct_a1", "GET", path)
