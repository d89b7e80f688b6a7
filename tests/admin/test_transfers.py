"""Transfers between schools (``casemgr.students.transfers``): no oracle, approval moves
the student, both sides audited, one decision only (acceptance 4)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import Any

import pytest

from casemgr import clock
from casemgr.authz import Role
from casemgr.context import RequestContext
from casemgr.errors import Conflict
from casemgr.students import transfers
from tests.admin.helpers import add_account, bearer
from tests.factories import add_student, issue_token, national_id, student_payload

PATH = "/api/v1/students/transfers"


@pytest.fixture
def leader_b(world: Any, db: Any) -> Any:
    return add_account(db, "leader_b", Role.SCHOOL_LEADER, world.school_b)


def ask(client: Any, who: Any, nid: str, class_id: Any) -> Any:
    return client.post(
        PATH, json={"national_id": nid, "to_class_id": str(class_id)}, headers=who.headers
    )


def a1_first_id() -> str:
    return student_payload(uuid.uuid4(), 1)["national_id"]


def test_a_transfer_moves_the_student_and_is_no_oracle(client, world, db, leader_b):
    known = ask(client, leader_b, a1_first_id(), world.class_b1)
    unknown = ask(client, leader_b, national_id(date(2012, 2, 3), 77), world.class_b1)
    # The same answer either way: status, headers, body shape.
    assert known.status_code == unknown.status_code == 202
    assert set(known.json()) == set(unknown.json()) == {"id"}
    assert {k for k in known.headers if k not in ("date", "content-length")} == {
        k for k in unknown.headers if k not in ("date", "content-length")
    }
    assert len(known.content) == len(unknown.content)
    # The trail says the same for both: no student on the requesting side.
    requested = db.execute(
        "SELECT student_id, school_id, detail FROM audit_events WHERE action = 'transfer:request'"
    )
    assert [r[0] for r in requested] == [None, None]
    # The receiving school sees two pending requests and no student in either.
    outgoing = client.get(PATH, headers=leader_b.headers).json()["items"]
    assert [(i["direction"], i["status"], i["student"]) for i in outgoing] == [
        ("outgoing", "pending", None),
        ("outgoing", "pending", None),
    ]
    # The sending school sees the one request naming its student, with roster fields.
    incoming = client.get(PATH, headers=world["leader_a"].headers).json()["items"]
    assert len(incoming) == 1
    item = incoming[0]
    assert item["direction"] == "incoming" and item["id"] == known.json()["id"]
    assert item["student"]["id"] == str(world.students["a1_first"])
    assert item["student"]["full_name"] == "测试学生001"
    assert item["to_school_name"] == "测试学校乙"
    # Neither the asking leader nor anyone but the sending leader decides.
    transfer_id = known.json()["id"]
    for who in (leader_b, world["ct_a1"], world["counselor_a"], world["admin"]):
        response = client.post(f"{PATH}/{transfer_id}/approve", headers=who.headers)
        assert response.status_code in (403, 404), who.username
    assert (
        client.post(
            f"{PATH}/{unknown.json()['id']}/approve", headers=world["leader_a"].headers
        ).status_code
        == 404
    )
    approved = client.post(f"{PATH}/{transfer_id}/approve", headers=world["leader_a"].headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["student_no_changed"] is False
    student = world.students["a1_first"]
    # Readable by the new school, 404 for the old one.
    assert client.get(f"/api/v1/students/{student}", headers=leader_b.headers).status_code == 200
    assert (
        client.get(f"/api/v1/students/{student}", headers=world["ct_b1"].headers).status_code == 200
    )
    for who in ("leader_a", "ct_a1", "counselor_a"):
        assert (
            client.get(f"/api/v1/students/{student}", headers=world[who].headers).status_code == 404
        )
    roster = client.get(f"/api/v1/classes/{world.class_b1}/students", headers=leader_b.headers)
    assert "NO00001" in {i["student_no"] for i in roster.json()["items"]}
    # The student number's index now lives in the new school's scope.
    found = client.post(
        "/api/v1/students/lookup", json={"student_no": "NO00001"}, headers=leader_b.headers
    ).json()["items"]
    assert [i["id"] for i in found] == [str(student)]
    assert (
        client.post(
            "/api/v1/students/lookup",
            json={"student_no": "NO00001"},
            headers=world["leader_a"].headers,
        ).json()["items"]
        == []
    )
    # Both sides are audited; the receiving side now learns the outcome.
    sides = db.execute(
        "SELECT action, school_id FROM audit_events WHERE action IN"
        " ('transfer:approve', 'transfer:receive') ORDER BY seq"
    )
    assert [(a, uuid.UUID(str(s))) for a, s in sides] == [
        ("transfer:approve", world.school_a),
        ("transfer:receive", world.school_b),
    ]
    outgoing = {i["id"]: i for i in client.get(PATH, headers=leader_b.headers).json()["items"]}
    assert outgoing[transfer_id]["status"] == "approved"
    assert outgoing[transfer_id]["student"] == {"id": str(student)}
    assert outgoing[unknown.json()["id"]]["status"] == "pending"
    # A second approval is refused.
    again = client.post(f"{PATH}/{transfer_id}/approve", headers=world["leader_a"].headers)
    assert again.status_code in (404, 409)


def test_a_decline_looks_like_no_answer_to_the_asking_school(client, world, db, leader_b):
    transfer_id = ask(client, leader_b, a1_first_id(), world.class_b1).json()["id"]
    a2_first = student_payload(uuid.uuid4(), 3)["national_id"]
    waiting = ask(client, leader_b, a2_first, world.class_b1).json()["id"]
    declined = client.post(f"{PATH}/{transfer_id}/decline", headers=world["leader_a"].headers)
    assert declined.status_code == 204
    outgoing = client.get(PATH, headers=leader_b.headers).json()["items"]
    assert sorted((i["status"], i["student"]) for i in outgoing) == [("pending", None)] * 2
    incoming = {
        i["id"]: i for i in client.get(PATH, headers=world["leader_a"].headers).json()["items"]
    }
    assert (incoming[transfer_id]["status"], incoming[transfer_id]["student"]) == ("declined", None)
    assert incoming[waiting]["status"] == "pending" and incoming[waiting]["student"]
    assert (
        client.post(f"{PATH}/{transfer_id}/approve", headers=world["leader_a"].headers).status_code
        == 409
    )
    # After 30 days every request not approved shows as closed, and none can be approved.
    clock.set_offset(timedelta(days=31))
    tokens = db.in_transaction(
        lambda session: asyncio.gather(
            issue_token(session, leader_b.id), issue_token(session, world["leader_a"].id)
        )
    )
    outgoing = client.get(PATH, headers=bearer(tokens[0])).json()["items"]
    assert [i["status"] for i in outgoing] == ["closed", "closed"]
    late = client.post(f"{PATH}/{waiting}/approve", headers=bearer(tokens[1]))
    assert late.status_code == 409


def test_asking_twice_gives_the_same_request(client, world, leader_b):
    first = ask(client, leader_b, a1_first_id(), world.class_b1).json()["id"]
    second = ask(client, leader_b, a1_first_id(), world.class_b1).json()["id"]
    assert first == second


def test_transfer_request_refusals(client, world, leader_b):
    assert ask(client, leader_b, "12345", world.class_b1).status_code == 422
    bad_check = a1_first_id()[:-1] + ("0" if a1_first_id()[-1] != "0" else "1")
    assert ask(client, leader_b, bad_check, world.class_b1).status_code == 422
    # A class of another school is out of reach; other roles never ask.
    assert ask(client, leader_b, a1_first_id(), world.class_a1).status_code == 404
    for who in ("ct_b1", "admin", "auditor", "counselor_a"):
        assert ask(client, world[who], a1_first_id(), world.class_b1).status_code in (403, 404)
    assert client.get(PATH, headers=world["ct_a1"].headers).status_code == 403


def test_a_taken_student_number_gets_a_suffix(client, world, db, leader_b):
    # School B already has a student numbered NO00001, like a1_first.
    db.in_transaction(
        lambda session: add_student(session, db.crypto, world.class_b1, 500, student_no="NO00001")
    )
    transfer_id = ask(client, leader_b, a1_first_id(), world.class_b1).json()["id"]
    approved = client.post(f"{PATH}/{transfer_id}/approve", headers=world["leader_a"].headers)
    assert approved.status_code == 200
    assert approved.json()["student_no_changed"] is True
    moved = client.get(
        f"/api/v1/students/{world.students['a1_first']}", headers=leader_b.headers
    ).json()
    assert moved["student_no"] == "NO00001-T"


def test_two_approvals_at_once_move_the_student_once(world, db, settings, leader_b):
    from casemgr.accounts.services import resolve_token
    from casemgr.authz import Authorizer
    from casemgr.db import create_engine, create_sessionmaker

    async def request(sessions: Any) -> uuid.UUID:
        async with sessions() as session, session.begin():
            principal = await resolve_token(session, leader_b.token)
            ctx = RequestContext(session, db.crypto, Authorizer(), principal, settings)
            return await transfers.request_transfer(
                ctx, national_id=a1_first_id(), to_class_id=world.class_b1
            )

    transfer_id = db.run(request)

    async def main() -> list[Any]:
        engine = create_engine(settings.database_url)
        sessions = create_sessionmaker(engine)

        async def approve() -> Any:
            async with sessions() as session, session.begin():
                principal = await resolve_token(session, world["leader_a"].token)
                ctx = RequestContext(session, db.crypto, Authorizer(), principal, settings)
                return await transfers.approve_transfer(ctx, transfer_id)

        try:
            return await asyncio.gather(approve(), approve(), return_exceptions=True)
        finally:
            await engine.dispose()

    outcomes = asyncio.run(main())
    assert sum(isinstance(o, transfers.Approved) for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, Conflict) for o in outcomes) == 1, outcomes
    assert db.execute("SELECT count(*) FROM audit_events WHERE action = 'transfer:approve'") == [
        (1,)
    ]
