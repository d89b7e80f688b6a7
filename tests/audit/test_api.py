"""The auditors' HTTP API: the event list with its filters and pages, verification, and
who may use them (SPEC §6, P4)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.audit.helpers import events, intrude, plaintexts, set_event
from tests.factories import student_payload

EVENTS_URL = "/api/v1/audit/events"
VERIFY_URL = "/api/v1/audit/verify"
ITEM_KEYS = {
    "seq",
    "at",
    "actor_id",
    "role",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "purpose",
    "emergency",
}


@pytest.fixture
def activity(world: Any, client: Any) -> Any:
    """Reads, a roster, a lookup, a create and denials by several people, over HTTP."""
    ct = world["ct_a1"].headers
    students = world.students
    assert client.get(f"/api/v1/students/{students['a1_first']}", headers=ct).status_code == 200
    assert client.get(f"/api/v1/students/{students['b1_first']}", headers=ct).status_code == 404
    assert client.get(f"/api/v1/classes/{world.class_a1}/students", headers=ct).status_code == 200
    lookup = client.post("/api/v1/students/lookup", json={"student_no": "NO00002"}, headers=ct)
    assert lookup.status_code == 200
    created = client.post("/api/v1/students", json=student_payload(world.class_a1, 60), headers=ct)
    assert created.status_code == 201
    auditor = world["auditor"].headers
    assert (
        client.get(f"/api/v1/students/{students['a1_first']}", headers=auditor).status_code == 403
    )
    return world


def as_item(event: dict[str, Any]) -> dict[str, Any]:
    """What the API should say about a stored event."""
    item = {key: event[key] for key in ITEM_KEYS}
    for key in ("actor_id",):
        item[key] = None if item[key] is None else str(item[key])
    return item


def parsed(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "at": datetime.fromisoformat(item["at"])}


def fetch(client: Any, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(EVENTS_URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "next_cursor"}
    return body


def test_events_lists_every_event_newest_first_with_exactly_the_documented_keys(
    db: Any, activity: Any, client: Any
) -> None:
    stored = events(db)
    body = fetch(client, activity["auditor"].headers, limit=1000)
    assert all(set(item) == ITEM_KEYS for item in body["items"])
    assert [parsed(item) for item in body["items"]] == [as_item(e) for e in reversed(stored)]
    assert body["next_cursor"] is None
    # The list itself was audited as the auditor's read.
    last = events(db)[-1]
    assert last["seq"] == stored[-1]["seq"] + 1
    assert (last["actor_id"], last["role"], last["action"], last["outcome"]) == (
        activity["auditor"].id,
        "auditor",
        "audit:read",
        "allow",
    )


def test_events_filters_select_exactly_the_matching_events(
    db: Any, activity: Any, client: Any
) -> None:
    world = activity
    auditor = world["auditor"].headers
    middle = events(db)[len(events(db)) // 2]["at"]
    cases: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
        ({"actor_id": str(world["ct_a1"].id)}, lambda e: e["actor_id"] == world["ct_a1"].id),
        ({"action": "student:read"}, lambda e: e["action"] == "student:read"),
        ({"outcome": "deny"}, lambda e: e["outcome"] == "deny"),
        ({"outcome": "allow"}, lambda e: e["outcome"] == "allow"),
        (
            {"student_id": str(world.students["a1_first"])},
            lambda e: e["student_id"] == world.students["a1_first"],
        ),
        ({"since": middle.isoformat()}, lambda e: e["at"] >= middle),
        ({"until": middle.isoformat()}, lambda e: e["at"] < middle),
        (
            {"actor_id": str(world["ct_a1"].id), "outcome": "deny"},
            lambda e: e["actor_id"] == world["ct_a1"].id and e["outcome"] == "deny",
        ),
        ({"action": "no:such-action"}, lambda e: False),
    ]
    for params, matches in cases:
        expected = [e["seq"] for e in reversed(events(db)) if matches(e)]
        body = fetch(client, auditor, limit=1000, **params)
        assert [item["seq"] for item in body["items"]] == expected, params
    # Every filter above that should match something did, so none was vacuous.
    for params, matches in cases[:-1]:
        assert any(matches(e) for e in events(db)), params
    naive = client.get(EVENTS_URL, params={"since": "2026-09-01T00:00:00"}, headers=auditor)
    assert naive.status_code == 422


@pytest.mark.parametrize("params", [{}, {"outcome": "allow"}], ids=["all", "filtered"])
def test_events_pages_cover_everything_once(
    db: Any, activity: Any, client: Any, params: dict[str, Any]
) -> None:
    auditor = activity["auditor"].headers
    expected = [
        e["seq"]
        for e in reversed(events(db))
        if "outcome" not in params or e["outcome"] == params["outcome"]
    ]
    assert len(expected) > 7 * 2  # several pages
    seen: list[int] = []
    cursor = None
    for _ in range(len(expected)):
        page = fetch(client, auditor, limit=7, **params, **({"cursor": cursor} if cursor else {}))
        seen += [item["seq"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 7
        assert cursor == page["items"][-1]["seq"]
    assert cursor is None
    assert len(seen) == len(set(seen))
    assert seen == expected


def test_non_auditors_are_refused_and_the_refusal_is_audited(
    db: Any, activity: Any, client: Any
) -> None:
    for who, (url, action) in itertools.product(
        (activity["ct_a1"], activity["admin"], activity["counselor_a"]),
        ((EVENTS_URL, "audit:read"), (VERIFY_URL, "audit:verify")),
    ):
        response = client.get(url, headers=who.headers)
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "items" not in response.json()
        last = events(db)[-1]
        assert (last["actor_id"], last["action"], last["outcome"]) == (who.id, action, "deny")


def test_verify_reports_the_chain_state_and_is_audited(db: Any, activity: Any, client: Any) -> None:
    auditor = activity["auditor"]
    count = len(events(db))
    response = client.get(VERIFY_URL, headers=auditor.headers)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "checked": count, "first_bad_seq": None}
    last = events(db)[-1]
    assert (last["seq"], last["actor_id"], last["action"], last["outcome"]) == (
        count + 1,
        auditor.id,
        "audit:verify",
        "allow",
    )

    async def tamper(session: AsyncSession) -> None:
        await set_event(session, 5, outcome="deny")

    intrude(db, tamper)
    damaged = client.get(VERIFY_URL, headers=auditor.headers)
    assert damaged.status_code == 200
    body = damaged.json()
    assert set(body) == {"ok", "checked", "first_bad_seq"}
    assert (body["ok"], body["first_bad_seq"]) == (False, 5)


def test_audit_events_hold_no_personal_data(db: Any, activity: Any, client: Any) -> None:
    world = activity
    assert fetch(client, world["auditor"].headers)["items"]
    personal = [
        value for n in (1, 2, 3, 4, 60) for value in plaintexts(student_payload(world.class_a1, n))
    ]
    assert any(value.startswith("测试学生") for value in personal)
    rows = db.execute("SELECT * FROM audit_events")
    assert len(rows) > 20
    stored = [str(value) for row in rows for value in row if not isinstance(value, bytes)]
    for value in personal:
        assert not any(value in text for text in stored), value
