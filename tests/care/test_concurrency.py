"""One open file per student, under concurrency (SQLite and PostgreSQL).

Requests are sent in parallel through the one application (threads into the test
client's event loop); each runs in its own transaction. Whatever the interleaving, one
file opens and the others answer 409 naming it; a file closes once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.care.helpers import Care, events

PARALLEL = 4


def parallel(calls: list[Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def open_files(db: Any, student_id: Any) -> int:
    async def body(session: Any) -> int:
        from sqlalchemy import select

        from casemgr.care.models import CaseFile
        from casemgr.students.models import Student

        student = await session.get(Student, student_id)
        cipher = await db.crypto.cipher(session, student.data_key_id)
        files = await session.scalars(select(CaseFile).where(CaseFile.student_id == student_id))
        return sum(1 for f in files if cipher.open_field(f, "status") == "open")

    return db.in_transaction(body)


def test_parallel_opens_give_one_file(care: Care, world, db):
    who = ["ct_a1", "counselor_a"] * (PARALLEL // 2)
    responses = parallel([lambda w=w: care.open_case(w, "a1_first", expect=None) for w in who])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (PARALLEL - 1), [r.text for r in responses]
    opened = next(r.json()["id"] for r in responses if r.status_code == 201)
    assert {r.json()["case_id"] for r in responses if r.status_code == 409} == {opened}
    assert open_files(db, world.students["a1_first"]) == 1
    # Each refused open left its trace.
    refused = [e for e in events(db, "case:open") if e.outcome == "deny"]
    assert len(refused) == PARALLEL - 1


def test_parallel_categories_share_one_new_file(care: Care, world, db):
    categories = ["orphan", "left_behind", "disability", "single_parent"][:PARALLEL]
    responses = parallel(
        [lambda c=c: care.add_category("ct_a1", "a1_second", c, expect=None) for c in categories]
    )
    assert [r.status_code for r in responses] == [201] * PARALLEL, [r.text for r in responses]
    assert len({r.json()["case_id"] for r in responses}) == 1
    assert open_files(db, world.students["a1_second"]) == 1


def test_parallel_closes_close_once(care: Care, world, db):
    case_id = care.open_case("ct_a1", "a1_first").json()["id"]
    responses = parallel(
        [
            lambda: care.call(
                "ct_a1", "POST", f"/api/v1/cases/{case_id}/close", {"reason": "Done."}
            )
            for _ in range(PARALLEL)
        ]
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * (PARALLEL - 1)
    assert len([e for e in events(db, "case:close") if e.outcome == "allow"]) == 1


def test_parallel_duplicate_category_is_recorded_once(care: Care, world, db):
    responses = parallel(
        [lambda: care.add_category("ct_a1", "a1_first", "orphan", expect=None)] * PARALLEL
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * (PARALLEL - 1)
    rows = db.execute(
        "SELECT COUNT(*) FROM care_categories WHERE student_id = :s",
        {"s": db.id(world.students["a1_first"])},
    )
    assert rows == [(1,)]
