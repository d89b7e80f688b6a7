"""A student's whole care record written through the API with a marker in every sealed
field of the care programme (raw storage scan, erasure)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts.services import resolve_token
from casemgr.authz import Authorizer, Permission
from casemgr.care.tasks import add_task
from casemgr.context import RequestContext
from tests.care.helpers import Care

TEXT = {
    "open_reason": "ZQXCARE-OPENREASON 开案理由标记甲",
    "support_plan": "ZQXCARE-SUPPORTPLAN 帮扶计划标记乙",
    "details": "ZQXCARE-CATDETAILS 类别详情标记丙",
    "category_end_reason": "ZQXCARE-CATENDREASON 类别结束标记丁",
    "goals": "ZQXCARE-PAIRINGGOALS 结对目标标记戊",
    "pairing_end_reason": "ZQXCARE-PAIRENDREASON 结对结束标记己",
    "log_notes": "ZQXCARE-LOGNOTES 帮扶记录标记庚",
    "visit_notes": "ZQXCARE-VISITNOTES 家访记录标记辛",
    "guidance": "ZQXCARE-GUIDANCETEXT 指导意见标记壬",
    "task_note": "ZQXCARE-TASKNOTE 任务备注标记癸",
    "close_reason": "ZQXCARE-CLOSEREASON 结案理由标记子",
    "emergency_reason": "ZQXCARE-EMERGENCYREASON 紧急查阅理由标记丑",
    "review_note": "ZQXCARE-REVIEWNOTE 审核备注标记寅",
}
# Dates nothing else in the database holds (stored timestamps are from the test clock).
DATES = {
    "since": date(2019, 3, 17),
    "category_review_on": date(2031, 5, 19),
    "category_ended_on": date(2026, 8, 13),
    "case_review_on": date(2030, 11, 29),
    "starts_on": date(2026, 8, 28),
    "pairing_ended_on": date(2026, 9, 2),
    "occurred_on": date(2026, 8, 21),
    "follow_up_on": date(2026, 10, 23),
    "visited_on": date(2026, 8, 26),
    "task_due_on": date(2026, 11, 17),
}
# Values of closed sets that only sealed columns hold.
CLOSED_SET_WORDS = (
    "left_behind",
    "financial_hardship",
    "family_contact",
    "many_to_one",
    "in_person",
    "screening_recheck",
)


def markers() -> list[str]:
    found = list(TEXT.values()) + list(CLOSED_SET_WORDS)
    for day in DATES.values():
        found += [day.isoformat(), day.strftime("%Y%m%d")]
    return found


@dataclass
class Written:
    student_id: uuid.UUID
    case_id: str
    grant_id: str
    ids: dict[str, str] = field(default_factory=dict)


def context(db: Any, session: AsyncSession, token: str, settings: Any) -> Any:
    async def build() -> RequestContext:
        principal = await resolve_token(session, token)
        assert principal is not None
        return RequestContext(session, db.crypto, Authorizer(), principal, settings)

    return build()


def write_whole_record(care: Care, world: Any, db: Any, settings: Any, name: str) -> Written:
    """Every care record of SPEC §4 for one student of class A1, markers everywhere."""
    student_id = world.students[name]
    case_id = care.open_case("ct_a1", name, reason=TEXT["open_reason"]).json()["id"]
    care.call(
        "ct_a1",
        "PATCH",
        f"/api/v1/cases/{case_id}",
        {"support_plan": TEXT["support_plan"], "review_on": DATES["case_review_on"].isoformat()},
        expect=200,
    )
    category = care.add_category(
        "ct_a1",
        name,
        "left_behind",
        since=DATES["since"].isoformat(),
        details=TEXT["details"],
        review_on=DATES["category_review_on"].isoformat(),
    ).json()
    care.add_category("ct_a1", name, "financial_hardship", details=TEXT["details"])
    care.call(
        "ct_a1",
        "POST",
        f"/api/v1/care-categories/{category['id']}/end",
        {
            "ended_on": DATES["category_ended_on"].isoformat(),
            "reason": TEXT["category_end_reason"],
        },
        expect=200,
    )
    pairing = care.pair(
        "ct_a1",
        case_id,
        ["teacher_a", "counselor_a"],
        mode="many_to_one",
        lead="teacher_a",
        goals=TEXT["goals"],
        starts_on=DATES["starts_on"].isoformat(),
    ).json()
    care.log(
        "teacher_a",
        case_id,
        kind="family_contact",
        notes=TEXT["log_notes"],
        occurred_on=DATES["occurred_on"].isoformat(),
        follow_up_on=DATES["follow_up_on"].isoformat(),
    )
    care.visit(
        "ct_a1",
        name,
        participants=("teacher_a",),
        mode="in_person",
        notes=TEXT["visit_notes"],
        visited_on=DATES["visited_on"].isoformat(),
    )
    care.ok(
        "counselor_a",
        "POST",
        f"/api/v1/cases/{case_id}/guidance",
        {"text": TEXT["guidance"]},
        expect=201,
    )
    care.ok(
        "ct_a1",
        "POST",
        f"/api/v1/pairings/{pairing['id']}/end",
        {
            "ended_on": DATES["pairing_ended_on"].isoformat(),
            "reason": TEXT["pairing_end_reason"],
        },
    )

    # An explicit task, as screening will create them (no route creates one).
    async def task(session: AsyncSession) -> None:
        ctx = await context(db, session, world["counselor_a"].token, settings)
        access = await ctx.student(Permission.CASE_READ, student_id)
        await add_task(
            ctx,
            access,
            assignee_id=world["counselor_a"].id,
            kind="screening_recheck",
            due_on=DATES["task_due_on"],
            note=TEXT["task_note"],
            case_id=uuid.UUID(case_id),
        )

    db.in_transaction(task)
    grant = care.ok(
        "leader_a",
        "POST",
        f"/api/v1/students/{student_id}/emergency-access",
        {"reason": TEXT["emergency_reason"]},
        expect=201,
    )
    care.ok(
        "auditor",
        "POST",
        f"/api/v1/audit/emergency-access/{grant['id']}/review",
        {"note": TEXT["review_note"]},
    )
    # Reads pass the values through more code paths (audit details among them).
    for path in (
        f"/api/v1/cases/{case_id}",
        f"/api/v1/cases/{case_id}/timeline",
        f"/api/v1/cases/{case_id}/support-logs",
        f"/api/v1/students/{student_id}/home-visits",
        f"/api/v1/students/{student_id}/export",
        "/api/v1/me/tasks",
    ):
        care.call("ct_a1", "GET", path, expect=200)
    care.call("counselor_a", "GET", "/api/v1/me/tasks", expect=200)
    file = care.case("ct_a1", case_id).json()
    assert file["support_plan"] == TEXT["support_plan"]
    assert {c["details"] for c in file["care_categories"]} == {TEXT["details"]}
    assert file["support_logs"][0]["notes"] == TEXT["log_notes"]
    assert file["home_visits"][0]["notes"] == TEXT["visit_notes"]
    assert file["guidance"][0]["text"] == TEXT["guidance"]
    assert file["pairings"][0]["goals"] == TEXT["goals"]
    care.ok("ct_a1", "POST", f"/api/v1/cases/{case_id}/close", {"reason": TEXT["close_reason"]})
    return Written(student_id, case_id, grant["id"], {"category": category["id"]})
