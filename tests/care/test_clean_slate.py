"""SPEC P3: default views show the current school year; older entries need an explicit,
audited request (``?include_earlier=true``, its own audit action)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.care.models import CaseFile
from casemgr.care.services import (
    close_case_file,
    new_case_code,
    new_case_file,
    new_guidance,
    new_home_visit,
    new_support_log,
)
from casemgr.students.models import Student
from tests.care.helpers import events

LAST_YEAR = "2025-2026"


def add_last_year(db: Any, world: Any, case_id: str) -> None:
    """Last year's log, visit and guidance for a1_first; a file of a1_second closed in June."""

    async def body(session: AsyncSession) -> None:
        case = await session.get(CaseFile, uuid.UUID(case_id))
        first = await session.get(Student, world.students["a1_first"])
        cipher = await db.crypto.cipher(session, first.data_key_id)
        session.add(
            new_support_log(
                cipher,
                case=case,
                author_id=world["ct_a1"].id,
                school_year=LAST_YEAR,
                occurred_on=date(2026, 5, 12),
                kind="academic",
                notes="Last spring's revision plan.",
                follow_up_on=None,
            )
        )
        session.add(
            new_home_visit(
                cipher,
                student_id=first.id,
                author_id=world["ct_a1"].id,
                school_year=LAST_YEAR,
                visited_on=date(2026, 3, 2),
                mode="in_person",
                notes="Last year's visit.",
                participant_ids=[],
            )
        )
        session.add(
            new_guidance(
                cipher,
                case=case,
                author_id=world["counselor_a"].id,
                school_year=LAST_YEAR,
                text="Last year's guidance.",
            )
        )
        second = await session.get(Student, world.students["a1_second"])
        other = await db.crypto.cipher(session, second.data_key_id)
        old = new_case_file(
            other,
            student_id=second.id,
            code=new_case_code(),
            reason="Opened last year.",
            opened_on=date(2025, 10, 1),
            created_by=None,
        )
        close_case_file(other, old, closed_on=date(2026, 6, 30), reason="Closed in June.")
        session.add(old)

    db.in_transaction(body)


def test_earlier_entries_need_an_explicit_audited_request(care, world, db):
    case_id = care.open_case("ct_a1", "a1_first").json()["id"]
    care.log("ct_a1", case_id, notes="This term's talk.")
    care.visit("ct_a1", "a1_first", notes="This term's visit.")
    add_last_year(db, world, case_id)

    listed = care.ok("ct_a1", "GET", "/api/v1/cases")["items"]
    assert [c["id"] for c in listed] == [case_id]
    assert events(db)[-1].action == "case:list"
    everything = care.ok("ct_a1", "GET", "/api/v1/cases?include_earlier=true")["items"]
    assert len(everything) == 2
    assert events(db)[-1].action == "case:read_earlier"

    file = care.case("ct_a1", case_id).json()
    assert [log["notes"] for log in file["support_logs"]] == ["This term's talk."]
    assert [v["notes"] for v in file["home_visits"]] == ["This term's visit."]
    assert file["guidance"] == [] and file["include_earlier"] is False
    assert events(db)[-1].action == "case:read"
    file = care.case("ct_a1", case_id, query="?include_earlier=true").json()
    assert len(file["support_logs"]) == 2 and len(file["home_visits"]) == 2
    assert [g["text"] for g in file["guidance"]] == ["Last year's guidance."]
    assert events(db)[-1].action == "case:read_earlier"

    for path in (
        f"/api/v1/cases/{case_id}/support-logs",
        f"/api/v1/students/{world.students['a1_first']}/home-visits",
    ):
        assert len(care.ok("ct_a1", "GET", path)["items"]) == 1
        assert len(care.ok("ct_a1", "GET", f"{path}?include_earlier=true")["items"]) == 2
        assert events(db)[-1].action == "case:read_earlier"

    timeline = care.ok("ct_a1", "GET", f"/api/v1/cases/{case_id}/timeline")["items"]
    assert all(item["at"] >= "2026-08-01" for item in timeline)
    earlier = care.ok("ct_a1", "GET", f"/api/v1/cases/{case_id}/timeline?include_earlier=true")[
        "items"
    ]
    assert {"2026-05-12", "2026-03-02"} <= {item["at"] for item in earlier}
    assert events(db)[-1].action == "case:read_earlier"
