"""One well-formed request per route and target, as the matrix sends it.

Each builder gets the cell (who sends, at which target) and returns the request: a valid
body, so that an allowed request succeeds and a refused one is refused for its reach
alone. Requests that change what others reach (ending a pairing, closing a file, a new
emergency grant, erasure, logging out) run after the others (:data:`LATE`); requests that
destroy their record (disabling an account, deciding a transfer, unassigning a teacher)
get a fresh one (``Fresh``). ``ok`` lists the answers an allowed request may give.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from casemgr.authz import Role
from casemgr.tabular import write_csv
from tests.access.scene import PHQ9, Scene
from tests.care.helpers import add_staff, day
from tests.factories import PASSWORD, national_id, student_payload

NEW_PASSWORD = "violet kettle orbit pasture"


@dataclass
class Cell:
    scene: Scene
    role: str
    target: str

    @property
    def world(self) -> Any:
        return self.scene.world

    @property
    def records(self) -> Any:
        return self.scene.records["own" if self.target == "any" else self.target]

    @property
    def school(self) -> uuid.UUID:
        return self.scene.school(self.target)

    @property
    def klass(self) -> uuid.UUID:
        return self.scene.class_of(self.target)

    @property
    def b(self) -> bool:
        return self.target == "other_school"


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Builder = Callable[[Cell], Request]


class Fresh:
    """Records made for one request only (the scene's stay as they are)."""

    def __init__(self, client: Any, db: Any, scene: Scene) -> None:
        self.client, self.db, self.scene = client, db, scene

    def staff(self, cell: Cell) -> uuid.UUID:
        school = cell.school
        n = cell.scene.next()
        return add_staff(self.db, cell.world, f"fresh.{n}", Role.TEACHER, school).id

    def assigned_teacher(self, cell: Cell) -> uuid.UUID:
        user = self.staff(cell)
        admin = cell.world["admin"].headers
        r = self.client.post(
            f"/api/v1/classes/{cell.klass}/teachers", json={"user_id": str(user)}, headers=admin
        )
        assert r.status_code == 204, r.text
        return user

    def transfer(self, cell: Cell) -> str:
        """A transfer asking for a student of the target's school: school A's leader
        decides on ``own`` ones, school B's on ``other_school`` ones."""
        world = cell.world
        n = cell.scene.next()
        source = world.class_b1 if cell.b else world.class_a1
        body = student_payload(source, n)
        creator = "ct_b1" if cell.b else "ct_a1"
        r = self.client.post("/api/v1/students", json=body, headers=world[creator].headers)
        assert r.status_code == 201, r.text
        asker, into = ("leader_a", world.class_a1) if cell.b else ("leader_b", world.class_b1)
        r = self.client.post(
            "/api/v1/students/transfers",
            json={"national_id": body["national_id"], "to_class_id": str(into)},
            headers=world[asker].headers,
        )
        assert r.status_code == 202, r.text
        return str(r.json()["id"])


def _csv_roster(cell: Cell) -> bytes:
    n = cell.scene.next()
    header = ["class_name", "student_no", "full_name", "gender", "birth_date"]
    return write_csv([header, ["七年级1班", f"IMP{n:05d}", f"导入学生{n}", "女", "2013-05-06"]])


def _results(cell: Cell) -> bytes:
    header = ["student_no", "administered_on", *(f"q{n}" for n in range(1, 10))]
    # A student with no consent in the round: an allowed import answers 422 for the row.
    return write_csv([header, ["NO00002", day(-1), *(str(a) for a in PHQ9)]])


def _user_body(cell: Cell) -> dict[str, Any]:
    n = cell.scene.next()
    return {
        "username": f"matrix.user.{n}",
        "display_name": "矩阵测试",
        "roles": [{"role": "teacher", "school_id": str(cell.school)}],
    }


def _login(cell: Cell) -> Request:
    account = cell.world[cell.role]
    body = {"username": account.username, "password": PASSWORD}
    if account.totp_secret:
        body["totp"] = account.totp_now()
    return Request("POST", "/api/v1/auth/login", body)


def _mine(cell: Cell, kind: str) -> str:
    """The caller's own session or task, or (``other_school``) another user's."""
    own = getattr(cell.scene, kind)
    if cell.target == "own":
        return own.get(cell.role, str(uuid.uuid4()))
    other = (
        "ct_b1"
        if kind == "sessions"
        else ("counselor_a" if cell.role != "counselor_a" else "ct_a1")
    )
    return own.get(other, str(uuid.uuid4()))


S, C = "/api/v1/students", "/api/v1/cases"


def builders(fresh: Fresh) -> dict[str, tuple[Builder, frozenset[int]]]:
    """route -> (request for a cell, the statuses an allowed request may answer)."""

    def ok(*statuses: int) -> frozenset[int]:
        return frozenset(statuses)

    return {
        "GET /health": (lambda c: Request("GET", "/health"), ok(200)),
        "GET /ready": (lambda c: Request("GET", "/ready"), ok(200)),
        "GET /metrics": (lambda c: Request("GET", "/metrics"), ok(200)),
        "POST /api/v1/auth/login": (_login, ok(200)),
        "POST /api/v1/auth/logout": (lambda c: Request("POST", "/api/v1/auth/logout"), ok(204)),
        "GET /api/v1/me": (lambda c: Request("GET", "/api/v1/me"), ok(200)),
        "GET /api/v1/me/sessions": (lambda c: Request("GET", "/api/v1/me/sessions"), ok(200)),
        "DELETE /api/v1/me/sessions/{session_id}": (
            lambda c: Request("DELETE", f"/api/v1/me/sessions/{_mine(c, 'sessions')}"),
            ok(204),
        ),
        "POST /api/v1/me/password": (
            lambda c: Request(
                "POST",
                "/api/v1/me/password",
                {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            ),
            ok(204),
        ),
        # A second factor once enrolled cannot be started again (409); a wrong code is 422.
        "POST /api/v1/me/totp": (lambda c: Request("POST", "/api/v1/me/totp"), ok(200, 409)),
        "POST /api/v1/me/totp/confirm": (
            lambda c: Request("POST", "/api/v1/me/totp/confirm", {"code": "000000"}),
            ok(409, 422),
        ),
        "POST /api/v1/students": (
            lambda c: Request("POST", S, student_payload(c.klass, c.scene.next())),
            ok(201),
        ),
        "GET /api/v1/students/{student_id}": (
            lambda c: Request("GET", f"{S}/{c.records.student}"),
            ok(200),
        ),
        "PATCH /api/v1/students/{student_id}": (
            lambda c: Request("PATCH", f"{S}/{c.records.student}", {"address": "矩阵路1号"}),
            ok(200),
        ),
        "POST /api/v1/students/lookup": (
            lambda c: Request("POST", f"{S}/lookup", {"student_no": "NO00001"}),
            ok(200),
        ),
        "GET /api/v1/classes/{class_id}/students": (
            lambda c: Request("GET", f"/api/v1/classes/{c.klass}/students"),
            ok(200),
        ),
        "GET /api/v1/schools": (lambda c: Request("GET", "/api/v1/schools"), ok(200)),
        "GET /api/v1/schools/{school_id}/classes": (
            lambda c: Request("GET", f"/api/v1/schools/{c.school}/classes"),
            ok(200),
        ),
        "POST /api/v1/schools": (
            lambda c: Request(
                "POST", "/api/v1/schools", {"name": "矩阵学校", "code": f"M-{c.scene.next()}"}
            ),
            ok(201),
        ),
        "POST /api/v1/schools/{school_id}/classes": (
            lambda c: Request(
                "POST",
                f"/api/v1/schools/{c.school}/classes",
                {"name": f"矩阵{c.scene.next()}班", "grade": 7, "school_year": "2026-2027"},
            ),
            ok(201),
        ),
        "POST /api/v1/classes/{class_id}/teachers": (
            lambda c: Request(
                "POST", f"/api/v1/classes/{c.klass}/teachers", {"user_id": str(fresh.staff(c))}
            ),
            ok(204),
        ),
        "DELETE /api/v1/classes/{class_id}/teachers/{user_id}": (
            lambda c: Request(
                "DELETE", f"/api/v1/classes/{c.klass}/teachers/{fresh.assigned_teacher(c)}"
            ),
            ok(204),
        ),
        "GET /api/v1/users": (
            lambda c: Request("GET", f"/api/v1/users?school_id={c.school}"),
            ok(200),
        ),
        "POST /api/v1/users": (lambda c: Request("POST", "/api/v1/users", _user_body(c)), ok(201)),
        "POST /api/v1/users/{user_id}/disable": (
            lambda c: Request("POST", f"/api/v1/users/{fresh.staff(c)}/disable"),
            ok(204),
        ),
        "POST /api/v1/users/{user_id}/reset-password": (
            lambda c: Request("POST", f"/api/v1/users/{fresh.staff(c)}/reset-password"),
            ok(200),
        ),
        "POST /api/v1/schools/{school_id}/students/import": (
            lambda c: Request(
                "POST",
                f"/api/v1/schools/{c.school}/students/import",
                content=_csv_roster(c),
                headers={"Content-Type": "text/csv"},
            ),
            ok(200),
        ),
        "POST /api/v1/schools/{school_id}/rollover": (
            lambda c: Request(
                "POST",
                f"/api/v1/schools/{c.school}/rollover",
                {"to_school_year": "2027-2028", "dry_run": True},
            ),
            ok(200),
        ),
        "GET /api/v1/students/transfers": (lambda c: Request("GET", f"{S}/transfers"), ok(200)),
        "POST /api/v1/students/transfers": (
            lambda c: Request(
                "POST",
                f"{S}/transfers",
                {
                    "national_id": national_id(date(2012, 3, 4), c.scene.next()),
                    "to_class_id": str(c.klass),
                },
            ),
            ok(202),
        ),
        "POST /api/v1/students/transfers/{transfer_id}/approve": (
            lambda c: Request("POST", f"{S}/transfers/{fresh.transfer(c)}/approve"),
            ok(200),
        ),
        "POST /api/v1/students/transfers/{transfer_id}/decline": (
            lambda c: Request("POST", f"{S}/transfers/{fresh.transfer(c)}/decline"),
            ok(204),
        ),
        "POST /api/v1/students/{student_id}/care-categories": (
            lambda c: Request(
                "POST",
                f"{S}/{c.records.student}/care-categories",
                {"category": "disability", "since": day(-3), "details": "矩阵"},
            ),
            ok(201, 409),
        ),
        "POST /api/v1/care-categories/{category_id}/end": (
            lambda c: Request(
                "POST",
                f"/api/v1/care-categories/{c.records.category}/end",
                {"ended_on": day(0), "reason": "Review showed it no longer applies."},
            ),
            ok(200, 409),
        ),
        "POST /api/v1/cases": (
            lambda c: Request(
                "POST", C, {"student_id": str(c.records.student), "reason": "Asked for."}
            ),
            ok(201, 409),
        ),
        "GET /api/v1/cases": (lambda c: Request("GET", C), ok(200)),
        "GET /api/v1/cases/{case_id}": (lambda c: Request("GET", f"{C}/{c.records.case}"), ok(200)),
        "PATCH /api/v1/cases/{case_id}": (
            lambda c: Request("PATCH", f"{C}/{c.records.case}", {"support_plan": "每周谈心"}),
            ok(200),
        ),
        "GET /api/v1/cases/{case_id}/timeline": (
            lambda c: Request("GET", f"{C}/{c.records.case}/timeline"),
            ok(200),
        ),
        "POST /api/v1/cases/{case_id}/close": (
            lambda c: Request("POST", f"{C}/{c.records.case}/close", {"reason": "Done."}),
            ok(200, 409),
        ),
        "GET /api/v1/me/tasks": (lambda c: Request("GET", "/api/v1/me/tasks"), ok(200)),
        "POST /api/v1/me/tasks/{task_id}/done": (
            lambda c: Request("POST", f"/api/v1/me/tasks/{_mine(c, 'tasks')}/done"),
            ok(204),
        ),
        "POST /api/v1/cases/{case_id}/pairings": (
            lambda c: Request(
                "POST",
                f"{C}/{c.records.case}/pairings",
                {
                    "mode": "one_to_one",
                    "mentor_ids": [str(c.world["teacher_b" if c.b else "teacher_a2"].id)],
                    "goals": "每周一起读书",
                    "starts_on": day(0),
                },
            ),
            ok(201, 409),
        ),
        "GET /api/v1/cases/{case_id}/pairings": (
            lambda c: Request("GET", f"{C}/{c.records.case}/pairings"),
            ok(200),
        ),
        "POST /api/v1/pairings/{pairing_id}/end": (
            lambda c: Request(
                "POST",
                f"/api/v1/pairings/{c.records.pairing}/end",
                {"ended_on": day(0), "reason": "The mentor changes school."},
            ),
            ok(200, 409),
        ),
        "GET /api/v1/schools/{school_id}/pairings": (
            lambda c: Request("GET", f"/api/v1/schools/{c.school}/pairings"),
            ok(200),
        ),
        "POST /api/v1/cases/{case_id}/support-logs": (
            lambda c: Request(
                "POST",
                f"{C}/{c.records.case}/support-logs",
                {"occurred_on": day(0), "kind": "academic", "notes": "一起复习"},
            ),
            ok(201),
        ),
        "GET /api/v1/cases/{case_id}/support-logs": (
            lambda c: Request("GET", f"{C}/{c.records.case}/support-logs"),
            ok(200),
        ),
        "POST /api/v1/cases/{case_id}/guidance": (
            lambda c: Request("POST", f"{C}/{c.records.case}/guidance", {"text": "多鼓励"}),
            ok(201),
        ),
        "POST /api/v1/students/{student_id}/home-visits": (
            lambda c: Request(
                "POST",
                f"{S}/{c.records.student}/home-visits",
                {"visited_on": day(0), "participant_ids": [], "mode": "phone", "notes": "电话"},
            ),
            ok(201),
        ),
        "GET /api/v1/students/{student_id}/home-visits": (
            lambda c: Request("GET", f"{S}/{c.records.student}/home-visits"),
            ok(200),
        ),
        "PUT /api/v1/schools/{school_id}/visit-requirements": (
            lambda c: Request(
                "PUT",
                f"/api/v1/schools/{c.school}/visit-requirements",
                {"class_teacher_visits": 2, "mentor_visits": 1},
            ),
            ok(200),
        ),
        "GET /api/v1/schools/{school_id}/visit-requirements": (
            lambda c: Request("GET", f"/api/v1/schools/{c.school}/visit-requirements"),
            ok(200),
        ),
        "GET /api/v1/me/visit-progress": (
            lambda c: Request("GET", "/api/v1/me/visit-progress"),
            ok(200),
        ),
        "GET /api/v1/schools/{school_id}/visit-progress": (
            lambda c: Request("GET", f"/api/v1/schools/{c.school}/visit-progress"),
            ok(200),
        ),
        # Those who reach the student already need no grant: 409.
        "POST /api/v1/students/{student_id}/emergency-access": (
            lambda c: Request(
                "POST",
                f"{S}/{c.records.student}/emergency-access",
                {"reason": "The guardian reports the child did not come home."},
            ),
            ok(201, 409),
        ),
        "GET /api/v1/audit/emergency-access": (
            lambda c: Request("GET", "/api/v1/audit/emergency-access"),
            ok(200),
        ),
        "POST /api/v1/audit/emergency-access/{grant_id}/review": (
            lambda c: Request(
                "POST",
                f"/api/v1/audit/emergency-access/{c.scene.grants['teacher_a']}/review",
                {"note": "Checked with the school."},
            ),
            ok(200),
        ),
        "GET /api/v1/students/{student_id}/export": (
            lambda c: Request("GET", f"{S}/{c.records.student}/export"),
            ok(200),
        ),
        "POST /api/v1/students/{student_id}/erase": (
            lambda c: Request(
                "POST", f"{S}/{c.records.student}/erase", {"reason": "guardian_request"}
            ),
            ok(204),
        ),
        "GET /api/v1/reports/care-summary": (
            lambda c: Request("GET", f"/api/v1/reports/care-summary?school_id={c.school}"),
            ok(200),
        ),
        "GET /api/v1/screening/instruments": (
            lambda c: Request("GET", "/api/v1/screening/instruments"),
            ok(200),
        ),
        "GET /api/v1/screening/rounds": (
            lambda c: Request("GET", "/api/v1/screening/rounds"),
            ok(200),
        ),
        "POST /api/v1/screening/rounds": (
            lambda c: Request(
                "POST",
                "/api/v1/screening/rounds",
                {
                    "school_id": str(c.school),
                    "name": "矩阵普查",
                    "instrument": "gad7",
                    "school_year": "2026-2027",
                    "class_ids": [str(c.world.class_b1 if c.b else c.world.class_a1)],
                    "opens_on": day(0),
                    "closes_on": day(10),
                },
            ),
            ok(201),
        ),
        "GET /api/v1/screening/rounds/{round_id}": (
            lambda c: Request("GET", f"/api/v1/screening/rounds/{c.records.round}"),
            ok(200),
        ),
        "GET /api/v1/screening/rounds/{round_id}/progress": (
            lambda c: Request("GET", f"/api/v1/screening/rounds/{c.records.round}/progress"),
            ok(200),
        ),
        "GET /api/v1/screening/rounds/{round_id}/consents": (
            lambda c: Request("GET", f"/api/v1/screening/rounds/{c.records.round}/consents"),
            ok(200),
        ),
        "POST /api/v1/screening/rounds/{round_id}/consents": (
            lambda c: Request(
                "POST",
                f"/api/v1/screening/rounds/{c.records.round}/consents",
                {
                    "student_id": str(c.records.student),
                    "decision": "granted",
                    "guardian_name": "矩阵家长",
                    "recorded_on": day(0),
                },
            ),
            ok(201),
        ),
        "POST /api/v1/screening/rounds/{round_id}/results": (
            lambda c: Request(
                "POST",
                f"/api/v1/screening/rounds/{c.records.round}/results",
                content=_results(c),
                headers={"Content-Type": "text/csv"},
            ),
            ok(200, 422),
        ),
        "GET /api/v1/screening/review-queue": (
            lambda c: Request("GET", "/api/v1/screening/review-queue"),
            ok(200),
        ),
        "GET /api/v1/screening/results/{result_id}": (
            lambda c: Request("GET", f"/api/v1/screening/results/{c.records.result}"),
            ok(200),
        ),
        "POST /api/v1/screening/results/{result_id}/review": (
            lambda c: Request(
                "POST",
                f"/api/v1/screening/results/{c.records.result}/review",
                {"outcome": "no_concern", "notes": "面谈后无需跟进"},
            ),
            ok(200, 409),
        ),
        "GET /api/v1/students/{student_id}/counseling-notes": (
            lambda c: Request("GET", f"{S}/{c.records.student}/counseling-notes"),
            ok(200),
        ),
        "POST /api/v1/students/{student_id}/counseling-notes": (
            lambda c: Request(
                "POST", f"{S}/{c.records.student}/counseling-notes", {"notes": "面谈记录"}
            ),
            ok(201),
        ),
        "GET /api/v1/audit/events": (lambda c: Request("GET", "/api/v1/audit/events"), ok(200)),
        "GET /api/v1/audit/unusual": (lambda c: Request("GET", "/api/v1/audit/unusual"), ok(200)),
        "POST /api/v1/audit/unusual/{finding_id}/review": (
            lambda c: Request(
                "POST",
                "/api/v1/audit/unusual/emergency_access."
                f"{uuid.UUID(c.scene.grants['leader_a']).hex}/review",
                {"note": "Checked with the school."},
            ),
            ok(200),
        ),
        "GET /api/v1/audit/verify": (lambda c: Request("GET", "/api/v1/audit/verify"), ok(200)),
    }


# Run after every other route, in this order: each changes what later requests reach.
LATE = (
    "POST /api/v1/care-categories/{category_id}/end",
    "POST /api/v1/pairings/{pairing_id}/end",
    "POST /api/v1/cases/{case_id}/close",
    "POST /api/v1/students/{student_id}/emergency-access",
    "POST /api/v1/students/{student_id}/erase",
    "DELETE /api/v1/me/sessions/{session_id}",
    "POST /api/v1/me/password",
    "POST /api/v1/auth/logout",
)
