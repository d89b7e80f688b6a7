"""Reach over HTTP (SPEC P2; issue 2 acceptance 5): 404 outside reach, 403 for actions a
role never has, each denial audited, and nothing decrypted before the decision."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.audit.models import AuditEvent
from casemgr.crypto import Crypto, FieldCipher
from tests.factories import national_id, student_payload


@dataclass
class DecryptionProbe:
    """Counts data-key unwraps and field openings made by the service."""

    unwraps: int = 0
    opens: int = 0

    @property
    def total(self) -> int:
        return self.unwraps + self.opens


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecryptionProbe]:
    probe = DecryptionProbe()
    unwrap = Crypto.open_data_key
    open_payload = FieldCipher.open_payload

    def counting_unwrap(self: Crypto, *args: Any, **kwargs: Any) -> FieldCipher:
        probe.unwraps += 1
        return unwrap(self, *args, **kwargs)

    def counting_open(self: FieldCipher, *args: Any, **kwargs: Any) -> bytes | None:
        probe.opens += 1
        return open_payload(self, *args, **kwargs)

    monkeypatch.setattr(Crypto, "open_data_key", counting_unwrap)
    monkeypatch.setattr(FieldCipher, "open_payload", counting_open)
    yield probe


def audit_count(db: Any) -> int:
    async def body(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)

    return db.in_transaction(body)


def newest_event(db: Any) -> AuditEvent:
    async def body(session: AsyncSession) -> AuditEvent:
        event = await session.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))
        assert event is not None
        return event

    return db.in_transaction(body)


class Probe:
    """Sends a request and checks the answer, its audit event and that nothing was opened."""

    def __init__(self, client: Any, world: Any, db: Any, decryptions: DecryptionProbe) -> None:
        self.client = client
        self.world = world
        self.db = db
        self.decryptions = decryptions

    def request(self, who: str, method: str, path: str, body: Any = None) -> Any:
        headers = self.world[who].headers
        if method == "GET":
            return self.client.get(path, headers=headers)
        return self.client.post(path, headers=headers, json=body)

    def denied(
        self, who: str, method: str, path: str, action: str, status: int, body: Any = None
    ) -> Any:
        events_before = audit_count(self.db)
        decryptions_before = self.decryptions.total

        r = self.request(who, method, path, body)

        assert r.status_code == status, (who, method, path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == status
        assert self.decryptions.total == decryptions_before, (who, path, "decrypted")
        assert audit_count(self.db) == events_before + 1, (who, path)
        event = newest_event(self.db)
        assert event.outcome == "deny"
        assert event.actor_id == self.world[who].id
        assert event.action == action
        assert json.loads(event.detail or "{}") == {"status": status}
        return r

    def allowed(self, who: str, method: str, path: str, status: int, body: Any = None) -> Any:
        decryptions_before = self.decryptions.total
        r = self.request(who, method, path, body)
        assert r.status_code == status, (who, method, path, r.text)
        event = newest_event(self.db)
        assert event.outcome == "allow"
        assert event.actor_id == self.world[who].id
        if method == "GET":
            # The probe does see decryption when it happens.
            assert self.decryptions.total > decryptions_before
        return r


@pytest.fixture
def probe(client: Any, world: Any, db: Any, decryptions: DecryptionProbe) -> Probe:
    return Probe(client, world, db, decryptions)


def student(world: Any, name: str) -> str:
    return f"/api/v1/students/{world.students[name]}"


def roster(class_id: uuid.UUID) -> str:
    return f"/api/v1/classes/{class_id}/students"


def test_class_teacher_reaches_only_students_of_own_class(probe, world):
    own = probe.allowed("ct_a1", "GET", student(world, "a1_first"), 200)
    assert own.json()["id"] == str(world.students["a1_first"])
    assert own.json()["full_name"] == "测试学生001"

    other_class = probe.denied("ct_a1", "GET", student(world, "a2_first"), "student:read", 404)
    other_school = probe.denied("ct_a1", "GET", student(world, "b1_first"), "student:read", 404)
    nowhere = probe.denied("ct_a1", "GET", f"/api/v1/students/{uuid.uuid4()}", "student:read", 404)
    # A record out of reach and a record that does not exist cannot be told apart.
    assert other_class.content == other_school.content == nowhere.content
    assert other_class.headers["content-type"] == nowhere.headers["content-type"]

    probe.allowed("ct_a1", "GET", roster(world.class_a1), 200)
    probe.denied("ct_a1", "GET", roster(world.class_a2), "roster:read", 404)
    probe.denied("ct_a1", "GET", roster(world.class_b1), "roster:read", 404)


@pytest.mark.parametrize("who", ["auditor", "admin"])
def test_bureau_roles_get_403_on_every_student_route(probe, world, who):
    forbidden = [
        probe.denied(
            who,
            "POST",
            "/api/v1/students",
            "student:create",
            403,
            student_payload(world.class_a1, 50),
        ),
        probe.denied(who, "GET", student(world, "a1_first"), "student:read", 403),
        probe.denied(who, "GET", student(world, "b1_first"), "student:read", 403),
        probe.denied(who, "GET", f"/api/v1/students/{uuid.uuid4()}", "student:read", 403),
        probe.denied(who, "GET", roster(world.class_a1), "roster:read", 403),
        probe.denied(
            who,
            "POST",
            "/api/v1/students/lookup",
            "student:lookup",
            403,
            {"student_no": "NO00001"},
        ),
    ]
    # Whether the record exists or not, a forbidden role hears the same thing.
    assert forbidden[1].content == forbidden[3].content
    assert probe.db.execute("SELECT COUNT(*) FROM students") == [(4,)]


def test_counselor_reaches_own_school_only(probe, world):
    probe.allowed("counselor_a", "GET", student(world, "a1_first"), 200)
    probe.allowed("counselor_a", "GET", student(world, "a2_first"), 200)
    probe.allowed("counselor_a", "GET", roster(world.class_a2), 200)
    probe.denied("counselor_a", "GET", student(world, "b1_first"), "student:read", 404)
    probe.denied("counselor_a", "GET", roster(world.class_b1), "roster:read", 404)
    # Counselors read personal details but do not create students (SPEC §3: "school, read").
    probe.denied(
        "counselor_a",
        "POST",
        "/api/v1/students",
        "student:create",
        403,
        student_payload(world.class_a1, 51),
    )


def test_mentor_without_pairings_sees_no_student(probe, world):
    # Mentors never read personal details: 403, whatever the student.
    probe.denied("teacher_a", "GET", student(world, "a1_first"), "student:read", 403)
    # They may read rosters, but only of students they are paired with: none here.
    probe.denied("teacher_a", "GET", roster(world.class_a1), "roster:read", 404)


def test_school_leader_creates_students_in_own_school_only(probe, world):
    r = probe.allowed(
        "leader_a", "POST", "/api/v1/students", 201, student_payload(world.class_a1, 60)
    )
    created = r.json()["id"]
    assert probe.db.execute("SELECT COUNT(*) FROM students") == [(5,)]

    probe.denied(
        "leader_a",
        "POST",
        "/api/v1/students",
        "student:create",
        404,
        student_payload(world.class_b1, 61),
    )
    probe.denied(
        "leader_a",
        "POST",
        "/api/v1/students",
        "student:create",
        404,
        student_payload(uuid.uuid4(), 62),
    )
    assert probe.db.execute("SELECT COUNT(*) FROM students") == [(5,)]
    probe.allowed("leader_a", "GET", f"/api/v1/students/{created}", 200)


def lookup(client: Any, world: Any, who: str, **body: str) -> list[str]:
    r = client.post("/api/v1/students/lookup", headers=world[who].headers, json=body)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def nid(n: int) -> str:
    # The national IDs tests.factories.student_payload gives student n.
    return national_id(date(2013, 1 + n % 12, 1 + n % 28), n)


def test_lookup_finds_only_students_within_reach(client, world, db, decryptions):
    s = world.students
    # a1_first is NO00001, a1_second NO00002, a2_first NO00003 (school A), b1_first NO00004.
    assert lookup(client, world, "ct_a1", student_no="NO00001") == [str(s["a1_first"])]
    assert lookup(client, world, "ct_a1", student_no="NO00003") == []
    assert lookup(client, world, "ct_a1", national_id=nid(3)) == []
    assert lookup(client, world, "counselor_a", student_no="NO00003") == [str(s["a2_first"])]
    assert lookup(client, world, "counselor_a", national_id=nid(3)) == [str(s["a2_first"])]
    assert lookup(client, world, "counselor_a", national_id=nid(4)) == []
    assert lookup(client, world, "counselor_a", student_no="NO00004") == []
    assert lookup(client, world, "ct_b1", national_id=nid(4)) == [str(s["b1_first"])]
    assert lookup(client, world, "teacher_a", student_no="NO00001") == []

    # Students outside reach are filtered before any of their data is decrypted.
    before = decryptions.total
    assert lookup(client, world, "ct_a1", national_id=nid(3)) == []
    assert lookup(client, world, "counselor_a", national_id=nid(4)) == []
    assert decryptions.total == before
    # Each lookup is audited, the empty ones included, without the value looked for.
    events = db.execute(
        "SELECT detail FROM audit_events WHERE action = 'student:lookup' ORDER BY seq"
    )
    assert len(events) == 11
    assert not any(nid(3) in (row[0] or "") or "NO0000" in (row[0] or "") for row in events)
