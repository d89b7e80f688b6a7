"""What the case view and the student export show of screening: counselors only, results
in use in the case view, everything held in the export."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts.services import resolve_token
from casemgr.authz import Authorizer, Permission
from casemgr.context import RequestContext, StudentAccess
from casemgr.screening.services import screening_for_case, screening_for_export
from tests.screening.helpers import consent, create_round, result_ids, table, upload

ANSWERS = [2, 2, 2, 2, 2, 0, 0, 1, 0]  # 11 moderate, pending review


def as_account(
    db: Any,
    world: Any,
    account: str,
    student_id: uuid.UUID,
    hook: Callable[[RequestContext, StudentAccess], Awaitable[Any]],
) -> Any:
    """Call ``hook`` as the case view does: with the caller's context and its access."""

    async def body(session: AsyncSession) -> Any:
        principal = await resolve_token(session, world[account].token)
        assert principal is not None
        ctx = RequestContext(session, db.crypto, Authorizer(), principal, db.settings)
        access = await ctx.student(Permission.CASE_READ, student_id)
        return await hook(ctx, access)

    return db.in_transaction(body)


@pytest.fixture
def imported(client, db, world) -> dict[str, Any]:
    student = world.students["a1_first"]
    round_id = create_round(client, world)
    assert consent(client, world, round_id, student).status_code == 201
    assert upload(client, world, round_id, table([("NO00001", ANSWERS)])).status_code == 200
    client.post(
        f"/api/v1/students/{student}/counseling-notes",
        json={"notes": "面谈"},
        headers=world["counselor_a"].headers,
    )
    return {"round_id": round_id, "student": student, "result": result_ids(db, round_id)[student]}


def test_counselors_get_the_results_in_use_for_the_case_view(db, world, imported):
    items = as_account(db, world, "counselor_a", imported["student"], screening_for_case)
    assert [(i["id"], i["instrument"], i["band"], i["total"], i["status"]) for i in items] == [
        (imported["result"], "phq9", "moderate", 11, "pending_review")
    ]
    assert "answers" not in items[0]


def test_teachers_get_no_screening_key(db, world, imported):
    assert as_account(db, world, "ct_a1", imported["student"], screening_for_case) is None
    assert as_account(db, world, "ct_a1", imported["student"], screening_for_export) is None


def test_a_withdrawn_result_leaves_the_case_view_but_the_export_says_it_is_held(
    client, db, world, imported
):
    assert (
        consent(client, world, imported["round_id"], imported["student"], "withdrawn").status_code
        == 201
    )
    assert as_account(db, world, "counselor_a", imported["student"], screening_for_case) == []
    held = as_account(db, world, "counselor_a", imported["student"], screening_for_export)
    (result,) = held["results"]
    assert result["consent"] == "withdrawn"
    assert result["answers"] == ANSWERS
    assert [c["decision"] for c in held["consents"]] == ["granted", "withdrawn"]
    assert [n.notes for n in held["counseling_notes"]] == ["面谈"]


def test_the_export_route_carries_screening_for_counselors_only(
    client, world, imported, monkeypatch
):
    """Through the real export route, with the section registered as the care programme
    registers sections (``casemgr.care.records.EXPORT_SECTIONS``)."""
    import casemgr.care.records as records

    section = ("screening", Permission.SCREENING_RESULT_READ, screening_for_export)
    if section not in records.EXPORT_SECTIONS:
        monkeypatch.setattr(records, "EXPORT_SECTIONS", (*records.EXPORT_SECTIONS, section))
    student = imported["student"]
    counselor = client.get(
        f"/api/v1/students/{student}/export", headers=world["counselor_a"].headers
    )
    assert counselor.status_code == 200, counselor.text
    held = counselor.json()["screening"]
    assert held["results"][0]["answers"] == ANSWERS
    assert held["results"][0]["band"] == "moderate"
    assert held["counseling_notes"][0]["notes"] == "面谈"
    teacher = client.get(f"/api/v1/students/{student}/export", headers=world["ct_a1"].headers)
    assert teacher.status_code == 200
    assert "screening" not in teacher.json()
    for word in ("phq9", "moderate", "pending_review", "面谈"):
        assert word not in teacher.text
