"""``casemgr retention run [--dry-run]``: students past retention are crypto-shredded."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from click.testing import CliRunner

from casemgr.cli import main
from casemgr.students.models import Student
from tests.care.helpers import events


def run_cli(settings: Any, tmp_path: Any, *args: str, **env: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        ["retention", "run", *args],
        env={
            "CASEMGR_DATABASE_URL": settings.database_url,
            "CASEMGR_KEYS_DIR": str(settings.keys_dir),
            "CASEMGR_VAR_DIR": str(tmp_path / "var"),
            "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
            **env,
        },
    )
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def leave(db: Any, student_id: Any, on: str) -> None:
    async def body(session: Any) -> None:
        student = await session.get(Student, student_id)
        student.enrolment = "left"
        student.left_on = date.fromisoformat(on)

    db.in_transaction(body)


def destroyed(db: Any, student_id: Any) -> bool:
    row = db.execute(
        "SELECT dk.wrapped FROM data_keys dk JOIN students s ON s.data_key_id = dk.id"
        " WHERE s.id = :id",
        {"id": db.id(student_id)},
    )
    return row[0][0] is None


def test_students_who_left_long_ago_are_erased(care, world, db, settings, tmp_path):
    care.add_category("ct_a1", "a1_first", "orphan")
    leave(db, world.students["a1_first"], "2023-06-30")  # more than 3 years before today
    leave(db, world.students["a1_second"], "2024-07-01")  # not yet

    dry = run_cli(settings, tmp_path, "--dry-run")
    assert dry["dry_run"] is True
    assert dry["rules"]["left_students"] == {"due": 1, "applied": 0}
    # Screening's rules run too (nothing of theirs is due here).
    assert dry["rules"]["screening_results"] == {"due": 0, "applied": 0}
    assert not destroyed(db, world.students["a1_first"])

    done = run_cli(settings, tmp_path)
    assert done["rules"]["left_students"] == {"due": 1, "applied": 1}
    assert destroyed(db, world.students["a1_first"])
    assert not destroyed(db, world.students["a1_second"])
    (erased,) = events(db, "student:erase")
    assert erased.actor_id is None and erased.purpose == "retention"
    assert erased.student_id == world.students["a1_first"]
    runs = events(db, "retention:run")
    assert [json.loads(e.detail)["dry_run"] for e in runs] == [True, False]
    # Nothing of the erased student is reachable any more; a second run finds nothing due.
    care.call("counselor_a", "GET", f"/api/v1/students/{world.students['a1_first']}", expect=404)
    again = run_cli(settings, tmp_path)
    assert again["rules"]["left_students"] == {"due": 0, "applied": 0}

    # The period is a setting, per record kind.
    shorter = run_cli(settings, tmp_path, CASEMGR_RETENTION_LEFT_STUDENT_YEARS="2")
    assert shorter["rules"]["left_students"] == {"due": 1, "applied": 1}
    assert destroyed(db, world.students["a1_second"])
