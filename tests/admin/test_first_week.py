"""A county's first week (issue 6, acceptance 1), through the HTTP API only.

A bureau admin creates a school and its leader; the leader changes the one-time password
and enrols a second factor, creates classes, teachers and a counselor, assigns class
teachers and imports a 1,500-row roster as XLSX, and the same roster as GB18030 CSV after
undoing the first import (identical results); a class teacher finds the class through
``GET /api/v1/me`` and reads its roster.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.authz import Role
from tests.admin.helpers import (
    XLSX_TYPE,
    add_account,
    bearer,
    count_students,
    csv_body,
    first_login,
    login,
    roster_rows,
    upload,
    xlsx_body,
)
from tests.factories import PASSWORD

CLASSES = ["七年级1班", "七年级2班", "八年级1班", "八年级2班", "九年级1班"]
GRADES = {"七": 7, "八": 8, "九": 9}


def undo_import(db: Any, school_id: uuid.UUID) -> None:
    """Take the imported students out again (a test's undo; there is no such route)."""
    sid = db.id(school_id)

    async def body(session: AsyncSession) -> None:
        found = await session.execute(
            text("SELECT data_key_id FROM students WHERE school_id = :s"), {"s": sid}
        )
        keys = [key_id for (key_id,) in found]
        await session.execute(text("DELETE FROM students WHERE school_id = :s"), {"s": sid})
        for key_id in keys:
            await session.execute(text("DELETE FROM data_keys WHERE id = :k"), {"k": key_id})

    db.in_transaction(body)


def rosters(client: Any, token: str, class_ids: dict[str, str]) -> dict[str, list[tuple]]:
    found = {}
    for name, class_id in class_ids.items():
        response = client.get(f"/api/v1/classes/{class_id}/students", headers=bearer(token))
        assert response.status_code == 200, response.text
        found[name] = sorted((i["student_no"], i["full_name"]) for i in response.json()["items"])
    return found


@pytest.mark.slow
def test_a_county_first_week(client, db):
    admin = add_account(db, "county.admin", Role.BUREAU_ADMIN, None)
    response = login(client, "county.admin", PASSWORD, admin.totp_now())
    assert response.status_code == 200, response.text
    admin_token = response.json()["token"]

    # The admin creates the school and its leader.
    school = client.post(
        "/api/v1/schools",
        json={"name": "第一实验中学", "code": "SY-001", "stage": "junior"},
        headers=bearer(admin_token),
    )
    assert school.status_code == 201, school.text
    school_id = school.json()["id"]
    leader = client.post(
        "/api/v1/users",
        json={
            "username": "Li.Leader",
            "display_name": "李校长",
            "roles": [{"role": "school_leader", "school_id": school_id}],
        },
        headers=bearer(admin_token),
    )
    assert leader.status_code == 201, leader.text
    assert leader.json()["username"] == "li.leader"

    # The leader's first login reaches only the self-service routes.
    first = login(client, "li.leader", leader.json()["one_time_password"])
    assert first.status_code == 200, first.text
    restricted = bearer(first.json()["token"])
    assert client.get("/api/v1/schools", headers=restricted).status_code == 403
    me = client.get("/api/v1/me", headers=restricted).json()
    assert me["user"]["password_change_required"] is True
    assert me["user"]["totp_enrolled"] is False
    leader_token, leader_secret = first_login(
        client, "li.leader", leader.json()["one_time_password"], enrol_totp=True
    )
    assert leader_secret
    lead = bearer(leader_token)
    me = client.get("/api/v1/me", headers=lead).json()
    assert me["user"]["password_change_required"] is False
    assert me["user"]["totp_enrolled"] is True
    assert me["schools"] == [{"id": school_id, "name": "第一实验中学"}]

    # Classes, staff, class teachers.
    class_ids = {}
    for name in CLASSES:
        created = client.post(
            f"/api/v1/schools/{school_id}/classes",
            json={"name": name, "grade": GRADES[name[0]], "school_year": "2026-2027"},
            headers=lead,
        )
        assert created.status_code == 201, created.text
        class_ids[name] = created.json()["id"]
    ct = client.post(
        "/api/v1/users",
        json={
            "username": "wang.ct",
            "display_name": "王老师",
            "roles": [{"role": "class_teacher", "school_id": school_id}],
            "class_ids": [class_ids["七年级1班"]],
        },
        headers=lead,
    )
    assert ct.status_code == 201, ct.text
    teacher = client.post(
        "/api/v1/users",
        json={
            "username": "zhao.teacher",
            "display_name": "赵老师",
            "roles": [{"role": "teacher", "school_id": school_id}],
        },
        headers=lead,
    )
    assert teacher.status_code == 201, teacher.text
    counselor = client.post(
        "/api/v1/users",
        json={
            "username": "chen.counselor",
            "display_name": "陈老师",
            "roles": [{"role": "counselor", "school_id": school_id}],
        },
        headers=lead,
    )
    assert counselor.status_code == 201, counselor.text
    assigned = client.post(
        f"/api/v1/classes/{class_ids['八年级1班']}/teachers",
        json={"user_id": teacher.json()["id"]},
        headers=lead,
    )
    assert assigned.status_code == 204, assigned.text
    staff = client.get(f"/api/v1/users?school_id={school_id}", headers=lead).json()["items"]
    by_name = {u["username"]: u for u in staff}
    assert {"li.leader", "wang.ct", "zhao.teacher", "chen.counselor"} <= set(by_name)
    assert {r["role"] for r in by_name["zhao.teacher"]["roles"]} == {"teacher", "class_teacher"}
    assert by_name["zhao.teacher"]["class_ids"] == [class_ids["八年级1班"]]

    # The roster, as XLSX; then undone and imported again from GB18030 CSV.
    rows = roster_rows(CLASSES, 1500)
    imported = upload(client, uuid.UUID(school_id), xlsx_body(rows), XLSX_TYPE, leader_token)
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"created": 1500, "rejected": []}
    from_xlsx = rosters(client, leader_token, class_ids)
    assert sum(len(r) for r in from_xlsx.values()) == 1500
    undo_import(db, uuid.UUID(school_id))
    assert count_students(db, uuid.UUID(school_id)) == 0
    body = csv_body(rows, encoding="gb18030")
    assert body.decode("gb18030") and not _is_utf8(body)
    again = upload(client, uuid.UUID(school_id), body, "text/csv", leader_token)
    assert again.status_code == 200, again.text
    assert again.json() == {"created": 1500, "rejected": []}
    assert rosters(client, leader_token, class_ids) == from_xlsx

    # A class teacher finds the class through /me and reads its roster.
    ct_token, _ = first_login(client, "wang.ct", ct.json()["one_time_password"], enrol_totp=False)
    me = client.get("/api/v1/me", headers=bearer(ct_token)).json()
    assert [(c["name"], c["school_year"]) for c in me["classes"]] == [("七年级1班", "2026-2027")]
    roster = client.get(
        f"/api/v1/classes/{me['classes'][0]['id']}/students", headers=bearer(ct_token)
    )
    assert roster.status_code == 200
    names = sorted((i["student_no"], i["full_name"]) for i in roster.json()["items"])
    assert names == from_xlsx["七年级1班"] and len(names) == 300
    # And nothing beyond it: another class of the school is not the class teacher's.
    other = client.get(
        f"/api/v1/classes/{class_ids['八年级1班']}/students", headers=bearer(ct_token)
    )
    assert other.status_code == 404


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
