"""Acceptance 2: every route of the care programme against every role of SPEC §3.

Allowed calls succeed and are audited as the caller; refused ones answer 403 (a role that
may never) or 404 (out of reach, indistinguishable from a record that does not exist),
are audited as denials, and decrypt nothing. A mentor reaches a paired student, of another
class too, and nothing else; auditors and bureau admins never reach content.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from casemgr.authz import Role
from casemgr.crypto import Crypto, FieldCipher
from tests.care.helpers import Care, add_staff, audit_count, day, events
from tests.factories import add_student

ROLES = ("ct_a1", "teacher_a", "counselor_a", "leader_a", "admin", "auditor", "ct_b1")


@dataclass
class Decryptions:
    count: int = 0


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Decryptions]:
    probe = Decryptions()
    unwrap = Crypto.open_data_key
    open_payload = FieldCipher.open_payload

    def counting_unwrap(self: Crypto, *args: Any, **kwargs: Any) -> FieldCipher:
        probe.count += 1
        return unwrap(self, *args, **kwargs)

    def counting_open(self: FieldCipher, *args: Any, **kwargs: Any) -> bytes | None:
        probe.count += 1
        return open_payload(self, *args, **kwargs)

    monkeypatch.setattr(Crypto, "open_data_key", counting_unwrap)
    monkeypatch.setattr(FieldCipher, "open_payload", counting_open)
    yield probe


@dataclass
class Scene:
    """School A: a1_first has a file (two categories' worth of history, a one-to-one
    pairing with teacher_a, a log, a visit, guidance); a2_first has a file whose mentor is
    ct_a1, the class teacher of another class; a1_second has none."""

    case_a1: str
    case_a2: str
    category: str
    pairing: str
    grant: str


@pytest.fixture
def scene(care: Care, world: Any, db: Any) -> Scene:
    category = care.add_category("ct_a1", "a1_first", "left_behind").json()
    case_a1 = category["case_id"]
    pairing = care.pair("ct_a1", case_a1, ["teacher_a"]).json()["id"]
    care.log("teacher_a", case_a1, follow_up_on=day(7))
    care.visit("ct_a1", "a1_first")
    care.ok(
        "counselor_a",
        "POST",
        f"/api/v1/cases/{case_a1}/guidance",
        {"text": "Praise effort, not results."},
        expect=201,
    )
    case_a2 = care.open_case("counselor_a", "a2_first").json()["id"]
    care.pair("counselor_a", case_a2, ["ct_a1"])
    grant = care.ok(
        "leader_a",
        "POST",
        f"/api/v1/students/{world.students['a2_first']}/emergency-access",
        {"reason": "The guardian called about a fall at home tonight."},
        expect=201,
    )["id"]

    async def more(session: Any) -> None:
        for name, n in (("a1_third", 7), ("a1_fourth", 8), ("a1_fifth", 9)):
            world.students[name] = await add_student(session, db.crypto, world.class_a1, n)

    db.in_transaction(more)
    return Scene(case_a1, case_a2, category["id"], pairing, grant)


Route = Callable[[Care, Any, Scene, str], tuple[str, str, Any]]


def _open_case_of(care: Care, student: str) -> str:
    """An open file for ``student`` (opened by the counselor when there is none)."""
    r = care.open_case("counselor_a", student, expect=None)
    if r.status_code == 409:
        return str(r.json()["case_id"])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _fresh_case(care: Care, student: str) -> str:
    """A newly opened file for ``student`` (closing the open one first)."""
    r = care.open_case("counselor_a", student, expect=None)
    if r.status_code == 409:
        care.ok(
            "counselor_a", "POST", f"/api/v1/cases/{r.json()['case_id']}/close", {"reason": "x"}
        )
        r = care.open_case("counselor_a", student)
    return str(r.json()["id"])


def _live_pairing(care: Care, case_id: str) -> str:
    r = care.pair("counselor_a", case_id, ["teacher_a"], expect=None)
    if r.status_code == 409:
        return str(r.json()["id"])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _category_to_end(care: Care, student: str) -> str:
    r = care.add_category("ct_a1", student, "orphan", expect=None)
    if r.status_code == 409:
        return str(r.json()["id"])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


S = "/api/v1/students"
C = "/api/v1/cases"
# Each route: (method, path, body), built when called (mutations get fresh targets).
ROUTES: dict[str, tuple[Route, str, dict[str, int]]] = {
    "add category": (
        lambda c, w, s, who: (
            "POST",
            f"{S}/{w.students['a1_second']}/care-categories",
            {"category": "disability", "since": day(-3), "details": "", "review_on": None},
        ),
        "care_category:write",
        {"ct_a1": 201},
    ),
    "end category": (
        lambda c, w, s, who: (
            "POST",
            f"/api/v1/care-categories/{_category_to_end(c, 'a1_third')}/end",
            {"ended_on": day(0), "reason": "Review showed it no longer applies."},
        ),
        "care_category:write",
        {"ct_a1": 200},
    ),
    "open case": (
        lambda c, w, s, who: (
            "POST",
            C,
            {"student_id": str(w.students["a1_fourth"]), "reason": "Asked by the guardian."},
        ),
        "case:write",
        {"ct_a1": 201, "counselor_a": 409},
    ),
    "list cases": (
        lambda c, w, s, who: ("GET", C, None),
        "case:read",
        {"ct_a1": 200, "teacher_a": 200, "counselor_a": 200, "ct_b1": 200},
    ),
    "read case": (
        lambda c, w, s, who: ("GET", f"{C}/{s.case_a1}", None),
        "case:read",
        {"ct_a1": 200, "teacher_a": 200, "counselor_a": 200},
    ),
    "update case": (
        lambda c, w, s, who: ("PATCH", f"{C}/{s.case_a1}", {"support_plan": "Weekly talks."}),
        "case:write",
        {"ct_a1": 200, "counselor_a": 200},
    ),
    "timeline": (
        lambda c, w, s, who: ("GET", f"{C}/{s.case_a1}/timeline", None),
        "case:read",
        {"ct_a1": 200, "teacher_a": 200, "counselor_a": 200},
    ),
    "close case": (
        lambda c, w, s, who: (
            "POST",
            f"{C}/{_open_case_of(c, 'a1_fifth')}/close",
            {"reason": "Support is no longer needed."},
        ),
        "case:write",
        {"ct_a1": 200, "counselor_a": 200},
    ),
    "create pairing": (
        lambda c, w, s, who: (
            "POST",
            f"{C}/{_fresh_case(c, 'a1_fifth')}/pairings",
            {
                "mode": "one_to_one",
                "mentor_ids": [str(w["teacher_a"].id)],
                "goals": "Reading together.",
                "starts_on": day(0),
            },
        ),
        "pairing:create",
        {"ct_a1": 201, "counselor_a": 201, "leader_a": 201},
    ),
    "case pairings": (
        lambda c, w, s, who: ("GET", f"{C}/{s.case_a1}/pairings", None),
        "pairing:read",
        {"ct_a1": 200, "teacher_a": 200, "counselor_a": 200, "leader_a": 200},
    ),
    "end pairing": (
        lambda c, w, s, who: (
            "POST",
            f"/api/v1/pairings/{_live_pairing(c, _open_case_of(c, 'a1_fifth'))}/end",
            {"ended_on": day(0), "reason": "Mentor changes school."},
        ),
        "pairing:create",
        {"ct_a1": 200, "counselor_a": 200, "leader_a": 200},
    ),
    "school pairings": (
        lambda c, w, s, who: ("GET", f"/api/v1/schools/{w.school_a}/pairings", None),
        "pairing:create",
        {"counselor_a": 200, "leader_a": 200},
    ),
    "write support log": (
        lambda c, w, s, who: (
            "POST",
            f"{C}/{s.case_a1}/support-logs",
            {"occurred_on": day(0), "kind": "material", "notes": "Winter coat."},
        ),
        "support_log:write",
        {"ct_a1": 201, "teacher_a": 201, "counselor_a": 201},
    ),
    "read support logs": (
        lambda c, w, s, who: ("GET", f"{C}/{s.case_a1}/support-logs", None),
        "support_log:read",
        {"ct_a1": 200, "teacher_a": 200, "counselor_a": 200},
    ),
    "write guidance": (
        lambda c, w, s, who: ("POST", f"{C}/{s.case_a1}/guidance", {"text": "Keep it calm."}),
        "guidance:write",
        {"counselor_a": 201},
    ),
    "write home visit": (
        lambda c, w, s, who: (
            "POST",
            f"{S}/{w.students['a1_first']}/home-visits",
            {"visited_on": day(0), "participant_ids": [], "mode": "phone", "notes": "Called."},
        ),
        "home_visit:write",
        {"ct_a1": 201, "teacher_a": 201},
    ),
    "read home visits": (
        lambda c, w, s, who: ("GET", f"{S}/{w.students['a1_first']}/home-visits", None),
        "home_visit:read",
        {"ct_a1": 200, "teacher_a": 200},
    ),
    "set visit requirements": (
        lambda c, w, s, who: (
            "PUT",
            f"/api/v1/schools/{w.school_a}/visit-requirements",
            {"class_teacher_visits": 2, "mentor_visits": 1},
        ),
        "visit_requirement:manage",
        {"leader_a": 200},
    ),
    "read visit requirements": (
        lambda c, w, s, who: ("GET", f"/api/v1/schools/{w.school_a}/visit-requirements", None),
        "visit_requirement:manage",
        {"leader_a": 200},
    ),
    "my visit progress": (
        lambda c, w, s, who: ("GET", "/api/v1/me/visit-progress", None),
        "visit_progress:read",
        {"ct_a1": 200, "teacher_a": 200, "leader_a": 200, "ct_b1": 200},
    ),
    "school visit progress": (
        lambda c, w, s, who: ("GET", f"/api/v1/schools/{w.school_a}/visit-progress", None),
        "visit_progress:read",
        {"leader_a": 200},
    ),
    "my tasks": (
        lambda c, w, s, who: ("GET", "/api/v1/me/tasks", None),
        "case:read",
        {"ct_a1": 200, "teacher_a": 200, "counselor_a": 200, "ct_b1": 200},
    ),
    "ask emergency access": (
        lambda c, w, s, who: (
            "POST",
            f"{S}/{w.students['a1_second']}/emergency-access",
            {"reason": "Guardian reports the child did not come home."},
        ),
        "emergency_access:request",
        # The class teacher and the counselor reach the student already: no grant needed.
        {"ct_a1": 409, "teacher_a": 201, "counselor_a": 409, "leader_a": 201},
    ),
    "list emergency accesses": (
        lambda c, w, s, who: ("GET", "/api/v1/audit/emergency-access", None),
        "emergency_access:review",
        {"auditor": 200},
    ),
    "review emergency access": (
        lambda c, w, s, who: (
            "POST",
            f"/api/v1/audit/emergency-access/{s.grant}/review",
            {"note": "Reason checked with the school."},
        ),
        "emergency_access:review",
        {"auditor": 200},
    ),
    "care summary": (
        lambda c, w, s, who: ("GET", f"/api/v1/reports/care-summary?school_id={w.school_a}", None),
        "report:read",
        {"counselor_a": 200, "leader_a": 200, "admin": 200},
    ),
    "export": (
        lambda c, w, s, who: ("GET", f"{S}/{w.students['a1_first']}/export", None),
        "student:export",
        {"ct_a1": 200, "counselor_a": 200},
    ),
    "erase": (
        lambda c, w, s, who: (
            "POST",
            f"{S}/{w.students['a1_third']}/erase",
            {"reason": "guardian_request"},
        ),
        "student:erase",
        {"leader_a": 204},
    ),
}


def _expected(
    authorizer_roles: dict[str, set[str]], who: str, perm: str, allowed: dict[str, int]
) -> int:
    if who in allowed:
        return allowed[who]
    return 404 if perm in authorizer_roles[who] else 403


def test_every_route_against_every_role(care, world, db, scene, decryptions, app):
    authorizer = app.state.authorizer
    held = {who: {p.value for p in authorizer.role_permissions(world[who].role)} for who in ROLES}
    for name, (build, perm, allowed) in ROUTES.items():
        for who in ROLES:
            method, path, body = build(care, world, scene, who)
            expected = _expected(held, who, perm, allowed)
            before_events = audit_count(db)
            before_decrypt = decryptions.count
            r = care.call(who, method, path, body)
            assert r.status_code == expected, (name, who, r.status_code, r.text)
            newest = events(db)[-1]
            assert newest.actor_id == world[who].id, (name, who)
            if expected < 400:
                assert newest.outcome == "allow", (name, who, newest.action)
                continue
            assert audit_count(db) == before_events + 1, (name, who)
            assert newest.outcome == "deny", (name, who)
            assert json.loads(newest.detail or "{}") == {"status": expected}, (name, who)
            assert r.headers["content-type"] == "application/problem+json"
            if expected in (403, 404):
                assert newest.action == perm, (name, who, newest.action)
                assert decryptions.count == before_decrypt, (name, who, "decrypted")


def test_out_of_reach_and_missing_records_answer_alike(care, world, scene):
    missing = uuid.uuid4()
    for path in (
        "/api/v1/cases/{}",
        "/api/v1/cases/{}/timeline",
        "/api/v1/cases/{}/support-logs",
    ):
        out_of_reach = care.call("ct_b1", "GET", path.format(scene.case_a1), expect=404)
        nowhere = care.call("ct_b1", "GET", path.format(missing), expect=404)
        assert out_of_reach.content == nowhere.content
    other_school = care.call(
        "ct_a1", "GET", f"/api/v1/students/{world.students['b1_first']}/home-visits", expect=404
    )
    nobody = care.call("ct_a1", "GET", f"/api/v1/students/{missing}/home-visits", expect=404)
    assert other_school.content == nobody.content


def test_a_mentor_reaches_paired_students_only(care, world, db, scene):
    # teacher_a is paired with a1_first; a2_first's file is not theirs.
    care.case("teacher_a", scene.case_a1, expect=200)
    care.case("teacher_a", scene.case_a2, expect=404)
    care.log("teacher_a", scene.case_a2, expect=404)
    care.visit("teacher_a", "a1_second", expect=404)
    # A mentor reads categories and guidance but writes neither, and sees no personal details.
    file = care.case("teacher_a", scene.case_a1).json()
    assert [c["category"] for c in file["care_categories"]] == ["left_behind"]
    assert [g["text"] for g in file["guidance"]] == ["Praise effort, not results."]
    care.call("teacher_a", "GET", f"/api/v1/students/{world.students['a1_first']}", expect=403)
    # The list holds the paired file only.
    listed = care.ok("teacher_a", "GET", "/api/v1/cases")["items"]
    assert [c["id"] for c in listed] == [scene.case_a1]


def test_a_class_teacher_mentors_a_student_of_another_class(care, world, scene):
    """ct_a1 teaches class A1 and is paired with a2_first of class A2: as a mentor."""
    file = care.case("ct_a1", scene.case_a2).json()
    assert file["student_id"] == str(world.students["a2_first"])
    care.log("ct_a1", scene.case_a2, expect=201)
    care.visit("ct_a1", "a2_first", expect=201)
    # ...but not as that class's teacher: no editing the file, no personal details.
    care.call("ct_a1", "PATCH", f"/api/v1/cases/{scene.case_a2}", {"support_plan": "x"}, expect=404)
    care.add_category("ct_a1", "a2_first", "orphan", expect=404)
    care.call("ct_a1", "GET", f"/api/v1/students/{world.students['a2_first']}", expect=404)
    listed = {c["id"] for c in care.ok("ct_a1", "GET", "/api/v1/cases")["items"]}
    assert listed == {scene.case_a1, scene.case_a2}


def test_auditors_and_admins_never_reach_content(care, world, scene):
    for who in ("auditor", "admin"):
        for path in (
            f"/api/v1/cases/{scene.case_a1}",
            f"/api/v1/cases/{scene.case_a1}/timeline",
            f"/api/v1/cases/{scene.case_a1}/support-logs",
            f"/api/v1/cases/{scene.case_a1}/pairings",
            f"/api/v1/students/{world.students['a1_first']}/home-visits",
            f"/api/v1/students/{world.students['a1_first']}/export",
            "/api/v1/cases",
            "/api/v1/me/tasks",
        ):
            care.call(who, "GET", path, expect=403)
    # The auditor reads why an emergency access happened, not what was seen under it.
    grants = care.ok("auditor", "GET", "/api/v1/audit/emergency-access")["items"]
    assert [g["reason"] for g in grants] == ["The guardian called about a fall at home tonight."]
    assert set(grants[0]) >= {"user_id", "student_id", "expires_at", "accesses"}


def test_staff_of_another_school_see_an_empty_list_and_404s(care, world, scene):
    add_staff(care.db, world, "teacher_b", Role.TEACHER, world.school_b)
    assert care.ok("teacher_b", "GET", "/api/v1/cases")["items"] == []
    care.case("teacher_b", scene.case_a1, expect=404)
    care.call(
        "teacher_b",
        "POST",
        f"/api/v1/students/{world.students['a1_first']}/emergency-access",
        {"reason": "Trying to reach a student of another school."},
        expect=404,
    )
