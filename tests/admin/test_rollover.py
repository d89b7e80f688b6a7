"""The school-year rollover (``casemgr.schools.rollover``) over two school years, with the
clock controlled (acceptance 3)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import clock
from casemgr.authz import Role
from casemgr.care.models import CaseFile, Pairing
from casemgr.care.services import new_case_file, new_pairing
from casemgr.cli import main as cli
from casemgr.schools.services import add_class, add_school
from casemgr.students.models import Student
from tests.admin.helpers import add_account
from tests.factories import add_student, issue_token


class School:
    """A junior school (grades 7-9) with one class per grade and students in each."""

    def __init__(self, db: Any) -> None:
        self.db = db

        async def body(session: AsyncSession) -> None:
            school = await add_school(session, name="育才中学", code="YC", stage="junior")
            self.id = school.id
            self.classes = {}
            for name, grade in (("七年级1班", 7), ("八年级1班", 8), ("九年级1班", 9)):
                created = await add_class(
                    session, school_id=school.id, name=name, grade=grade, school_year="2026-2027"
                )
                self.classes[grade] = created.id
            self.students = {}
            n = 100
            for grade, class_id in self.classes.items():
                for _ in range(3):
                    n += 1
                    self.students.setdefault(grade, []).append(
                        await add_student(session, db.crypto, class_id, n, student_no=f"YC{n}")
                    )

        db.in_transaction(body)
        self.leader = add_account(db, "yc.leader", Role.SCHOOL_LEADER, self.id)
        self.ct7 = add_account(db, "yc.ct7", Role.CLASS_TEACHER, self.id, [self.classes[7]])
        self.ct9 = add_account(db, "yc.ct9", Role.CLASS_TEACHER, self.id, [self.classes[9]])
        self.mentor = add_account(db, "yc.mentor", Role.TEACHER, self.id)

    def new_tokens(self) -> None:
        """Tokens issued at the clock's present (the old ones expired as time moved on)."""

        async def body(session: AsyncSession) -> None:
            for account in (self.leader, self.ct7, self.ct9, self.mentor):
                account.token = await issue_token(session, account.id)

        self.db.in_transaction(body)

    def open_case_with_pairing(self, student_id: uuid.UUID) -> uuid.UUID:
        async def body(session: AsyncSession) -> uuid.UUID:
            student = await session.get(Student, student_id)
            assert student is not None
            cipher = await self.db.crypto.cipher(session, student.data_key_id)
            case = new_case_file(
                cipher,
                student_id=student_id,
                code=f"CASE-{uuid.uuid4().hex[:6]}",
                reason="关爱",
                opened_on=date(2026, 9, 10),
                created_by=None,
            )
            session.add(case)
            await session.flush()
            pairing, mentors = new_pairing(
                cipher,
                case=case,
                mode="one_to_one",
                goals="学习",
                starts_on=date(2026, 9, 15),
                mentor_ids=[self.mentor.id],
                lead_id=self.mentor.id,
                created_by=None,
            )
            session.add(pairing)
            await session.flush()
            session.add_all(mentors)
            return case.id

        return self.db.in_transaction(body)


def rollover(client: Any, school: School, to: str, dry_run: bool = False, who: Any = None) -> Any:
    return client.post(
        f"/api/v1/schools/{school.id}/rollover",
        json={"to_school_year": to, "dry_run": dry_run},
        headers=(who or school.leader).headers,
    )


def state(db: Any, school: School) -> dict[str, Any]:
    async def body(session: AsyncSession) -> dict[str, Any]:
        students = {
            s.id: (s.class_id, s.enrolment, s.left_on)
            for s in await session.scalars(select(Student).where(Student.school_id == school.id))
        }
        return {"students": students}

    return db.in_transaction(body)


def classes_of(client: Any, school: School, who: Any, year: str | None = None) -> list[dict]:
    query = f"?school_year={year}" if year else ""
    response = client.get(f"/api/v1/schools/{school.id}/classes{query}", headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_two_school_years_move_up_and_the_top_grade_leaves(client, db):
    clock.freeze(datetime(2027, 7, 15, 9, tzinfo=UTC))
    school = School(db)
    leaver = school.students[9][0]
    case_id = school.open_case_with_pairing(leaver)
    mover = school.students[7][0]
    kept_case = school.open_case_with_pairing(mover)
    before = state(db, school)

    # The plan changes nothing.
    plan = rollover(client, school, "2027-2028", dry_run=True)
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert (body["from_school_year"], body["top_grade"], body["dry_run"]) == ("2026-2027", 9, True)
    assert [(c["name"], c["action"], c["to_name"], c["students"]) for c in body["classes"]] == [
        ("七年级1班", "move_up", "八年级1班", 3),
        ("八年级1班", "move_up", "九年级1班", 3),
        ("九年级1班", "leave", None, 3),
    ]
    assert (body["students_moved"], body["students_left"], body["classes_created"]) == (6, 3, 2)
    assert "full_name" not in plan.text and "case" not in plan.text
    assert state(db, school) == before
    assert len(classes_of(client, school, school.leader)) == 3

    # The rollover.
    done = rollover(client, school, "2027-2028")
    assert done.status_code == 200, done.text
    assert done.json()["dry_run"] is False
    new_classes = classes_of(client, school, school.leader)
    assert [(c["name"], c["grade"], c["school_year"]) for c in new_classes] == [
        ("八年级1班", 8, "2027-2028"),
        ("九年级1班", 9, "2027-2028"),
    ]
    by_grade = {c["grade"]: c["id"] for c in new_classes}
    after = state(db, school)["students"]
    for student in school.students[7]:
        assert after[student][:2] == (uuid.UUID(by_grade[8]), "enrolled")
    for student in school.students[9]:
        assert after[student] == (school.classes[9], "left", date(2027, 8, 1))
    previous = db.execute(
        "SELECT previous_class_id FROM classes WHERE id = :c", {"c": db.id(uuid.UUID(by_grade[8]))}
    )
    assert uuid.UUID(str(previous[0][0])) == school.classes[7]

    # The leaver's file closed with its reason, the pairing ended; the mover's stay open.
    async def care(session: AsyncSession) -> dict[str, Any]:
        out = {}
        for student_id, case in ((leaver, case_id), (mover, kept_case)):
            student = await session.get(Student, student_id)
            cipher = await db.crypto.cipher(session, student.data_key_id)
            record = await session.get(CaseFile, case)
            pairing = await session.scalar(select(Pairing).where(Pairing.case_id == case))
            out[student_id] = (
                cipher.open_field(record, "status"),
                cipher.open_field(record, "close_reason"),
                cipher.open_field(record, "closed_on"),
                pairing.ended_at is not None,
                cipher.open_field(pairing, "end_reason"),
            )
        return out

    closed = db.in_transaction(care)
    assert closed[leaver] == ("closed", "left_school", date(2027, 7, 15), True, "left_school")
    assert closed[mover] == ("open", None, None, False, None)

    # Class teachers moved with their class; the leaving class's teacher has none now.
    me7 = client.get("/api/v1/me", headers=school.ct7.headers).json()
    assert [(c["name"], c["school_year"]) for c in me7["classes"]] == [("八年级1班", "2027-2028")]
    roster = client.get(f"/api/v1/classes/{by_grade[8]}/students", headers=school.ct7.headers)
    assert roster.status_code == 200 and len(roster.json()["items"]) == 3
    old = client.get(f"/api/v1/classes/{school.classes[7]}/students", headers=school.ct7.headers)
    assert old.status_code == 404
    assert client.get("/api/v1/me", headers=school.ct9.headers).json()["classes"] == []
    # The mentor of the leaver lost the student at once.
    student = client.get(f"/api/v1/students/{leaver}", headers=school.ct9.headers)
    assert student.status_code == 404
    # The old year is still there, on asking.
    assert len(classes_of(client, school, school.leader, "2026-2027")) == 3

    events = dict(
        db.execute(
            "SELECT action, count(*) FROM audit_events WHERE school_id = :s GROUP BY action",
            {"s": db.id(school.id)},
        )
    )
    assert events["school_year:rollover"] == 1
    assert events["student:leave"] == 3
    assert events["case:close"] == 1 and events["pairing:end"] == 1
    rollover_detail = db.execute(
        "SELECT detail FROM audit_events WHERE action = 'school_year:rollover'"
    )
    assert json.loads(rollover_detail[0][0]) == {
        "classes_created": 2,
        "students_left": 3,
        "students_moved": 6,
        "to": "2027-2028",
    }

    # Running it again is harmless.
    again = rollover(client, school, "2027-2028")
    assert again.status_code == 200
    assert (again.json()["students_moved"], again.json()["students_left"]) == (0, 0)
    assert {c["successor"] for c in again.json()["classes"] if c["action"] == "move_up"} == {"done"}
    assert state(db, school)["students"] == after
    assert len(classes_of(client, school, school.leader)) == 2

    # A year later: the leader made a new grade-7 class and the grade-9 successor before.
    clock.freeze(datetime(2028, 7, 20, 9, tzinfo=UTC))
    school.new_tokens()
    leader = school.leader.headers
    for name, grade in (("七年级1班", 7), ("九年级1班", 9)):
        made = client.post(
            f"/api/v1/schools/{school.id}/classes",
            json={"name": name, "grade": grade, "school_year": "2028-2029"},
            headers=leader,
        )
        assert made.status_code == 201
    # Now the school's current year is 2028-2029 already: the rollover completes it.
    second = rollover(client, school, "2028-2029")
    assert second.status_code == 200, second.text
    steps = {c["name"]: c for c in second.json()["classes"]}
    assert steps["八年级1班"]["successor"] == "adopt"
    assert steps["九年级1班"]["action"] == "leave"
    final = {c["name"]: c for c in classes_of(client, school, school.leader)}
    assert sorted(final) == ["七年级1班", "九年级1班"]
    nine = final["九年级1班"]["id"]
    after2 = state(db, school)["students"]
    for student in school.students[7]:
        assert after2[student][:2] == (uuid.UUID(nine), "enrolled")
    for student in school.students[8]:
        assert after2[student][1:] == ("left", date(2028, 8, 1))
    me7 = client.get("/api/v1/me", headers=school.ct7.headers).json()
    assert [(c["name"], c["school_year"]) for c in me7["classes"]] == [("九年级1班", "2028-2029")]


def test_rollover_refusals_and_reach(client, db, world):
    school = School(db)
    assert rollover(client, school, "2029-2030").status_code == 422
    assert rollover(client, school, "2027-2029").status_code == 422
    assert rollover(client, school, "2025-2026").status_code == 422
    for who in ("ct_a1", "counselor_a", "admin", "auditor"):
        assert rollover(client, school, "2027-2028", who=world[who]).status_code == 403, who
    assert rollover(client, school, "2027-2028", who=world["leader_a"]).status_code == 404
    # A class in the new year holding the name a successor needs, for another grade: 409.
    clash = client.post(
        f"/api/v1/schools/{school.id}/classes",
        json={"name": "八年级1班", "grade": 9, "school_year": "2027-2028"},
        headers=school.leader.headers,
    )
    assert clash.status_code == 201
    refused = rollover(client, school, "2027-2028")
    assert refused.status_code == 409
    assert refused.json()["classes"] == ["八年级1班"]


def test_the_command_line_rollover(db, settings, tmp_path):
    clock.freeze(datetime(2027, 7, 15, 9, tzinfo=UTC))
    school = School(db)
    env = {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(tmp_path / "var"),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
    }
    args = ["year", "rollover", "--school-id", str(school.id), "--to", "2027-2028"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"], env=env)
    assert dry.exit_code == 0, (dry.stdout, dry.stderr)
    plan = json.loads(dry.stdout.strip().splitlines()[-1])
    assert plan["dry_run"] is True and plan["students_left"] == 3
    assert "九年级1班 (grade 9, 3 students) leaves" in dry.stderr
    done = CliRunner().invoke(cli, args, env=env)
    assert done.exit_code == 0, (done.stdout, done.stderr)
    assert json.loads(done.stdout.strip().splitlines()[-1])["students_moved"] == 6
    moved = db.execute(
        "SELECT count(*) FROM students WHERE enrolment = 'left' AND school_id = :s",
        {"s": db.id(school.id)},
    )
    assert moved == [(3,)]
