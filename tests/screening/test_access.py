"""Acceptance 3: a class teacher, a mentor, a school leader, a bureau admin and an auditor
each get 404 or 403 on every screening result and review route, audited; the case file
they can see holds the guidance text and no instrument, score, band, answer or flag.
Every screening route is tried by every role."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from casemgr import clock
from tests.screening.helpers import consent, create_round, result_ids, table, upload

GUIDANCE = "ZQXGUIDANCE 请多关注该生课堂情绪，课后可以多聊聊。"
# Answers whose values, as a list, appear nowhere else (total 14: moderate).
ANSWERS = [2, 1, 3, 0, 2, 1, 3, 2, 0]
NOT_FOR_TEACHERS = ("phq9", "PHQ-9", "moderate", "critical_item", "pending_review", "reviewed")
SCREENING_KEYS = {"screening", "answers", "total", "band", "flags", "scales", "instrument"}
OTHERS = ("ct_a1", "teacher_a", "leader_a", "admin", "auditor")


@pytest.fixture
def reviewed(client, db, world) -> dict[str, Any]:
    """A round with a1_first's result, reviewed as ``support`` with guidance for teachers,
    and a mentor (teacher_a) paired with the student in the case file the review opened."""
    student = world.students["a1_first"]
    round_id = create_round(client, world)
    assert consent(client, world, round_id, student).status_code == 201
    assert upload(client, world, round_id, table([("NO00001", ANSWERS)])).status_code == 200
    result_id = result_ids(db, round_id)[student]
    counselor = world["counselor_a"].headers
    response = client.post(
        f"/api/v1/screening/results/{result_id}/review",
        json={"outcome": "support", "notes": "面谈记录", "guidance_for_teachers": GUIDANCE},
        headers=counselor,
    )
    assert response.status_code == 200, response.text
    case_id = response.json()["case_id"]
    pairing = client.post(
        f"/api/v1/cases/{case_id}/pairings",
        json={
            "mode": "one_to_one",
            "mentor_ids": [str(world["teacher_a"].id)],
            "goals": "每周谈心一次",
            "starts_on": clock.today().isoformat(),
        },
        headers=counselor,
    )
    assert pairing.status_code == 201, pairing.text
    return {"round_id": round_id, "result_id": str(result_id), "case_id": case_id}


def keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


def routes(world: Any, ids: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Every screening route (method, path, JSON body) with real ids."""
    student = world.students["a1_first"]
    today = clock.today()
    return [
        ("GET", "/api/v1/screening/review-queue", None),
        ("GET", f"/api/v1/screening/results/{ids['result_id']}", None),
        (
            "POST",
            f"/api/v1/screening/results/{ids['result_id']}/review",
            {"outcome": "no_concern", "notes": "x"},
        ),
        ("GET", f"/api/v1/students/{student}/counseling-notes", None),
        ("POST", f"/api/v1/students/{student}/counseling-notes", {"notes": "x"}),
        ("POST", f"/api/v1/screening/rounds/{ids['round_id']}/results", None),
        (
            "POST",
            "/api/v1/screening/rounds",
            {
                "school_id": str(world.school_a),
                "name": "x",
                "instrument": "gad7",
                "school_year": "2026-2027",
                "class_ids": [str(world.class_a1)],
                "opens_on": today.isoformat(),
                "closes_on": (today + timedelta(days=3)).isoformat(),
            },
        ),
        ("GET", "/api/v1/screening/instruments", None),
        ("GET", "/api/v1/screening/rounds", None),
        ("GET", f"/api/v1/screening/rounds/{ids['round_id']}", None),
        ("GET", f"/api/v1/screening/rounds/{ids['round_id']}/progress", None),
        ("GET", f"/api/v1/screening/rounds/{ids['round_id']}/consents", None),
        (
            "POST",
            f"/api/v1/screening/rounds/{ids['round_id']}/consents",
            {
                "student_id": str(student),
                "decision": "granted",
                "guardian_name": "x",
                "recorded_on": today.isoformat(),
            },
        ),
    ]


# What each role gets on each route (by index in ``routes``). Results, reviews, notes and
# the import: counselors only, everyone else 403 (a role that may never do it).
EXPECTED = {
    "counselor_a": [200, 200, 200, 200, 201, 200, 201, 200, 200, 200, 200, 200, 201],
    "ct_a1": [403, 403, 403, 403, 403, 403, 403, 403, 200, 200, 403, 200, 201],
    "teacher_a": [403] * 13,
    "leader_a": [403, 403, 403, 403, 403, 403, 201, 200, 200, 200, 200, 403, 403],
    "admin": [403] * 13,
    "auditor": [403] * 13,
    # A class teacher of another school: a round out of reach is "not found".
    "ct_b1": [403, 403, 403, 403, 403, 403, 403, 403, 200, 404, 403, 404, 404],
}


@pytest.mark.parametrize("account", sorted(EXPECTED))
def test_every_role_on_every_screening_route(client, db, world, reviewed, account):
    for (method, path, body), expected in zip(
        routes(world, reviewed), EXPECTED[account], strict=True
    ):
        if path.endswith("/results"):
            rows = table([("NO00002", ANSWERS)])
            from casemgr.tabular import write_csv

            response = client.post(
                path,
                content=write_csv(rows),
                headers={**world[account].headers, "Content-Type": "text/csv"},
            )
            if account == "counselor_a":
                assert response.status_code == 422  # a1_second has no consent: refused row
                continue
        else:
            response = client.request(method, path, json=body, headers=world[account].headers)
        assert response.status_code == expected, (account, method, path, response.text)
        if account != "counselor_a" and "/results/" in path:
            assert "answers" not in response.text and "band" not in response.text


def test_refusals_on_results_and_reviews_are_audited(client, db, world, reviewed):
    before = db.execute("SELECT count(*) FROM audit_events WHERE outcome = 'deny'")[0][0]
    for account in OTHERS:
        for method, path in (
            ("GET", f"/api/v1/screening/results/{reviewed['result_id']}"),
            ("POST", f"/api/v1/screening/results/{reviewed['result_id']}/review"),
        ):
            body = {"outcome": "urgent", "notes": "x"} if method == "POST" else None
            response = client.request(method, path, json=body, headers=world[account].headers)
            assert response.status_code in (403, 404)
    after = db.execute("SELECT count(*) FROM audit_events WHERE outcome = 'deny'")[0][0]
    assert after - before == 2 * len(OTHERS)


def test_a_result_of_another_school_is_not_found_for_a_counselor(client, db, world, reviewed):
    """A counselor of school B: the result exists but is out of reach -> 404, audited."""
    from casemgr.accounts.services import create_user
    from casemgr.authz import Role
    from tests.factories import PASSWORD, issue_token

    async def body(session):
        user = await create_user(
            session,
            db.crypto,
            username="counselor_b",
            password=PASSWORD,
            role=Role.COUNSELOR,
            school_id=world.school_b,
        )
        return await issue_token(session, user.id)

    token = db.in_transaction(body)
    headers = {"Authorization": f"Bearer {token}"}
    missing = "00000000-0000-4000-8000-000000000000"
    for path in (
        f"/api/v1/screening/results/{reviewed['result_id']}",
        f"/api/v1/screening/results/{missing}",
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 404
        assert response.json()["detail"] == "No such record."
    imported = client.post(
        f"/api/v1/screening/rounds/{reviewed['round_id']}/results",
        content=b"student_no,administered_on\r\n",
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert imported.status_code == 404
    queue = client.get("/api/v1/screening/review-queue", headers=headers)
    assert queue.status_code == 200 and queue.json() == {"items": []}
    notes = client.get(
        f"/api/v1/students/{world.students['a1_first']}/counseling-notes", headers=headers
    )
    assert notes.status_code == 404


@pytest.mark.parametrize("account", ["ct_a1", "teacher_a"])
def test_teachers_see_the_guidance_and_nothing_of_the_screening(client, world, reviewed, account):
    headers = world[account].headers
    case = client.get(f"/api/v1/cases/{reviewed['case_id']}", headers=headers)
    assert case.status_code == 200, case.text
    assert GUIDANCE in [g["text"] for g in case.json()["guidance"]]
    assert not keys_of(case.json()) & SCREENING_KEYS
    timeline = client.get(f"/api/v1/cases/{reviewed['case_id']}/timeline", headers=headers)
    tasks = client.get("/api/v1/me/tasks", headers=headers)
    cases = client.get("/api/v1/cases", headers=headers)
    for response in (case, timeline, tasks, cases):
        assert response.status_code == 200
        for word in NOT_FOR_TEACHERS:
            assert word not in response.text, (account, word, response.request.url)


def test_leaders_admins_and_auditors_do_not_see_the_file(client, world, reviewed):
    for account in ("leader_a", "admin", "auditor", "ct_b1"):
        response = client.get(
            f"/api/v1/cases/{reviewed['case_id']}", headers=world[account].headers
        )
        assert response.status_code in (403, 404)
        assert GUIDANCE not in response.text


def test_emergency_access_does_not_reach_screening(client, world, reviewed):
    """A mentor's emergency grant reaches the file as a class teacher would: never results."""
    student = world.students["a2_first"]
    grant = client.post(
        f"/api/v1/students/{student}/emergency-access",
        json={"reason": "家长来电反映紧急情况，需要立即查看档案"},
        headers=world["teacher_a"].headers,
    )
    assert grant.status_code == 201, grant.text
    headers = world["teacher_a"].headers
    assert client.get("/api/v1/screening/review-queue", headers=headers).status_code == 403
    assert (
        client.get(f"/api/v1/students/{student}/counseling-notes", headers=headers).status_code
        == 403
    )
    assert (
        client.get(
            f"/api/v1/screening/results/{reviewed['result_id']}", headers=headers
        ).status_code
        == 403
    )


def test_a_class_teacher_sees_own_classes_of_a_round_without_its_instrument(
    client, world, reviewed
):
    response = client.get(
        f"/api/v1/screening/rounds/{reviewed['round_id']}", headers=world["ct_a1"].headers
    )
    assert response.status_code == 200
    assert response.json()["class_ids"] == [str(world.class_a1)]
    assert response.json()["instrument"] is None
    listed = client.get("/api/v1/screening/rounds", headers=world["ct_a1"].headers).json()
    assert [r["id"] for r in listed["items"]] == [reviewed["round_id"]]
    assert "phq9" not in str(listed)
    consents = client.get(
        f"/api/v1/screening/rounds/{reviewed['round_id']}/consents",
        headers=world["ct_a1"].headers,
    ).json()["items"]
    assert {c["student_id"] for c in consents} == {str(world.students["a1_first"])}


def test_a_class_teacher_records_consent_for_own_classes_only(client, world, reviewed):
    round_id = reviewed["round_id"]
    own = consent(client, world, round_id, world.students["a1_second"], account="ct_a1")
    assert own.status_code == 201
    other = consent(client, world, round_id, world.students["a2_first"], account="ct_a1")
    assert other.status_code == 404
    outside = consent(client, world, round_id, world.students["b1_first"], account="counselor_a")
    assert outside.status_code == 404


def test_the_counselor_sees_the_screening_in_the_case_file(client, world, reviewed):
    """SPEC §6: the case view has ``screening`` for counselors, and for nobody else."""
    case = client.get(f"/api/v1/cases/{reviewed['case_id']}", headers=world["counselor_a"].headers)
    assert case.status_code == 200, case.text
    screening = case.json()["screening"]
    assert [r["id"] for r in screening] == [reviewed["result_id"]]
    assert screening[0]["band"]
    for account in ("ct_a1", "teacher_a"):
        other = client.get(f"/api/v1/cases/{reviewed['case_id']}", headers=world[account].headers)
        assert "screening" not in other.json()
