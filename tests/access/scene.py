"""A county with a record of every kind on each side of every reach boundary.

Built through the real routes (and, for explicit tasks, the service other features use),
on ``tests.factories.build_world`` with the clock frozen in the first week of 2026-2027.

Students of school A and B, as the access matrix names them (``tests/access/matrix.py``):

- ``own``: a1_first, class A1: ct_a1's class; paired with teacher_a.
- ``neighbour``: a2_first, class A2 of the same school: no relation with ct_a1 or
  teacher_a (class teacher ct_a2, mentor teacher_a2).
- ``emergency``: a2_emergency, class A2 like the neighbour, but ct_a1, teacher_a and
  leader_a hold a live emergency-access grant on it.
- ``other_school``: b1_first, class B1 of school B (ct_b1, teacher_b, counselor_b,
  leader_b).

Each has a file with a care category, a pairing, a support log, a home visit, guidance,
a counseling note and a screening result; its texts carry :data:`MARKER` + the student's
name in the matrix, so that a response can be scanned for another school's content.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import clock
from casemgr.accounts.services import resolve_token
from casemgr.authz import Authorizer, Permission, Role
from casemgr.care.tasks import add_task
from casemgr.context import RequestContext
from casemgr.tabular import write_csv
from tests.care.helpers import Care, add_staff, day
from tests.factories import add_student, issue_token, student_payload

MARKER = "ZQXSCENE"
TARGETS = ("own", "neighbour", "emergency", "other_school")
STUDENTS = {
    "own": "a1_first",
    "neighbour": "a2_first",
    "emergency": "a2_emergency",
    "other_school": "b1_first",
}
# ``tests.factories.student_payload`` numbers: the student number is NO0000n.
NUMBERS = {"own": 1, "neighbour": 3, "emergency": 5, "other_school": 4}
# Who writes each student's records: (class teacher, mentor, counselor, leader).
WRITERS = {
    "own": ("ct_a1", "teacher_a", "counselor_a", "leader_a"),
    "neighbour": ("ct_a2", "teacher_a2", "counselor_a", "leader_a"),
    "emergency": ("ct_a2", "teacher_a2", "counselor_a", "leader_a"),
    "other_school": ("ct_b1", "teacher_b", "counselor_b", "leader_b"),
}
PHQ9 = [1, 0, 2, 1, 0, 1, 2, 0, 1]
EMERGENCY_REASON = "The guardian called: the child did not come home tonight."


@dataclass
class Records:
    """The ids of one student's records."""

    student: uuid.UUID
    student_no: str
    case: str = ""
    case_code: str = ""
    category: str = ""
    pairing: str = ""
    support_log: str = ""
    home_visit: str = ""
    counseling_note: str = ""
    round: str = ""
    result: str = ""


@dataclass
class Scene:
    world: Any
    care: Care
    records: dict[str, Records] = field(default_factory=dict)
    grants: dict[str, str] = field(default_factory=dict)  # account -> grant on emergency
    tasks: dict[str, str] = field(default_factory=dict)  # account -> own explicit task
    sessions: dict[str, str] = field(default_factory=dict)  # account -> a spare session id
    transfers: dict[str, str] = field(default_factory=dict)  # target -> a transfer request
    spare_tokens: dict[str, str] = field(default_factory=dict)
    counter: int = 100

    def next(self) -> int:
        """A number no other record of the scene uses (student numbers, usernames)."""
        self.counter += 1
        return self.counter

    def school(self, target: str) -> uuid.UUID:
        return self.world.school_b if target == "other_school" else self.world.school_a

    def class_of(self, target: str) -> uuid.UUID:
        return {
            "own": self.world.class_a1,
            "neighbour": self.world.class_a2,
            "emergency": self.world.class_a2,
            "other_school": self.world.class_b1,
        }[target]

    def other_school_values(self) -> set[str]:
        """What no caller of school A may ever see: school B's ids, codes and texts."""
        world = self.world
        b = self.records["other_school"]
        values = {
            str(world.school_b),
            str(world.class_b1),
            *(str(v) for k, v in vars(b).items() if k != "student_no" and v),
            *(str(world[name].id) for name in ("ct_b1", "teacher_b", "counselor_b", "leader_b")),
        }
        values |= set(student_values(NUMBERS["other_school"]))
        values.add(f"{MARKER}-other_school")
        values.discard("")
        return values


def student_values(n: int) -> list[str]:
    """The personal values ``tests.factories.student_payload`` gives student ``n``."""
    payload = student_payload(uuid.uuid4(), n)
    guardian = payload["guardians"][0]
    return [
        payload["full_name"],
        payload["student_no"],
        payload["national_id"],
        payload["address"],
        guardian["name"],
        guardian["phone"],
    ]


def _context(db: Any, session: AsyncSession, token: str) -> Any:
    async def build() -> RequestContext:
        principal = await resolve_token(session, token)
        assert principal is not None
        return RequestContext(session, db.crypto, Authorizer(), principal, None)  # type: ignore[arg-type]

    return build()


def _student_records(scene: Scene, db: Any, target: str) -> Records:
    care, world = scene.care, scene.world
    name = STUDENTS[target]
    teacher, mentor, counselor, _ = WRITERS[target]
    text = f"{MARKER}-{target}"
    student = world.students[name]
    records = Records(student=student, student_no=f"NO{NUMBERS[target]:05d}")
    category = care.add_category(teacher, name, "left_behind", details=text).json()
    records.category, records.case = category["id"], category["case_id"]
    records.pairing = care.pair(teacher, records.case, [mentor], goals=text).json()["id"]
    records.support_log = care.log(mentor, records.case, notes=text, follow_up_on=day(14)).json()[
        "id"
    ]
    records.home_visit = care.visit(teacher, name, notes=text).json()["id"]
    care.ok(counselor, "POST", f"/api/v1/cases/{records.case}/guidance", {"text": text}, 201)
    records.counseling_note = care.ok(
        counselor, "POST", f"/api/v1/students/{student}/counseling-notes", {"notes": text}, 201
    )["id"]
    listed = care.ok(teacher, "GET", "/api/v1/cases")["items"]
    records.case_code = next(c["code"] for c in listed if c["id"] == records.case)
    return records


def _screening(scene: Scene, db: Any, school: str) -> None:
    """One round per school over its classes, a granted consent and a result per student."""
    care, world = scene.care, scene.world
    targets = ["other_school"] if school == "b" else ["own", "neighbour", "emergency"]
    counselor = "counselor_b" if school == "b" else "counselor_a"
    classes = [world.class_b1] if school == "b" else [world.class_a1, world.class_a2]
    round_id = care.ok(
        counselor,
        "POST",
        "/api/v1/screening/rounds",
        {
            "school_id": str(world.school_b if school == "b" else world.school_a),
            "name": f"{MARKER} round {school}",
            "instrument": "phq9",
            "school_year": "2026-2027",
            "class_ids": [str(c) for c in classes],
            "opens_on": day(-5),
            "closes_on": day(20),
        },
        201,
    )["id"]
    rows = [["student_no", "administered_on", *(f"q{n}" for n in range(1, 10))]]
    for target in targets:
        records = scene.records[target]
        care.ok(
            counselor,
            "POST",
            f"/api/v1/screening/rounds/{round_id}/consents",
            {
                "student_id": str(records.student),
                "decision": "granted",
                "guardian_name": f"{MARKER}-{target}",
                "recorded_on": day(-2),
            },
            201,
        )
        rows.append([records.student_no, day(-1), *(str(a) for a in PHQ9)])
    response = care.client.post(
        f"/api/v1/screening/rounds/{round_id}/results",
        content=write_csv(rows),
        headers={**world[counselor].headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    for target in targets:
        records = scene.records[target]
        records.round = round_id
        found = db.execute(
            "SELECT id FROM screening_results WHERE round_id = :r AND student_id = :s",
            {"r": db.id(uuid.UUID(round_id)), "s": db.id(records.student)},
        )
        records.result = str(uuid.UUID(str(found[0][0])))


def build_scene(client: Any, world: Any, db: Any) -> Scene:
    """The county of the module docstring (the world's clock must be frozen already)."""
    care = Care(client, world, db)
    scene = Scene(world, care)
    add_staff(db, world, "ct_a2", Role.CLASS_TEACHER, world.school_a, (world.class_a2,))
    add_staff(db, world, "teacher_a2", Role.TEACHER, world.school_a)
    add_staff(db, world, "teacher_b", Role.TEACHER, world.school_b)
    add_staff(db, world, "counselor_b", Role.COUNSELOR, world.school_b)
    add_staff(db, world, "leader_b", Role.SCHOOL_LEADER, world.school_b)

    async def emergency_student(session: AsyncSession) -> uuid.UUID:
        return await add_student(session, db.crypto, world.class_a2, 5)

    world.students["a2_emergency"] = db.in_transaction(emergency_student)
    for target in TARGETS:
        scene.records[target] = _student_records(scene, db, target)
    _screening(scene, db, "a")
    _screening(scene, db, "b")
    emergency = world.students["a2_emergency"]
    for account in ("ct_a1", "teacher_a", "leader_a"):
        scene.grants[account] = care.ok(
            account,
            "POST",
            f"/api/v1/students/{emergency}/emergency-access",
            {"reason": EMERGENCY_REASON},
            201,
        )["id"]

    # An explicit task for each content account (as screening assigns them), and a spare
    # session per account (ending one must not end the token the matrix uses).
    async def extras(session: AsyncSession) -> None:
        ctx = await _context(db, session, world["counselor_a"].token)
        own = scene.records["own"]
        access = await ctx.student(Permission.CASE_READ, own.student)
        for account in ("ct_a1", "teacher_a", "counselor_a"):
            task = await add_task(
                ctx,
                access,
                assignee_id=world[account].id,
                kind="follow_up",
                due_on=clock.today() + timedelta(days=3),
                note=f"{MARKER}-own",
                case_id=uuid.UUID(own.case),
            )
            scene.tasks[account] = str(task.id)

    db.in_transaction(extras)
    for account in list(world.accounts):
        token = db.in_transaction(lambda s, a=account: issue_token(s, world[a].id))
        scene.spare_tokens[account] = token
        sessions = client.get(
            "/api/v1/me/sessions", headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
        scene.sessions[account] = next(s["id"] for s in sessions if s["current"])
    return scene
