"""Schools and classes over HTTP (``casemgr.schools``): creation and reach."""

from __future__ import annotations

import uuid

import pytest

from casemgr.schools.rollover import next_class_name


def test_bureau_admins_create_schools_with_a_stage(client, world, db):
    admin = world["admin"].headers
    created = client.post(
        "/api/v1/schools", json={"name": "三中", "code": "S-3", "stage": "senior"}, headers=admin
    )
    assert created.status_code == 201
    school_id = created.json()["id"]
    assert db.execute("SELECT stage FROM schools WHERE code = 'S-3'") == [("senior",)]
    assert (
        client.post(
            "/api/v1/schools", json={"name": "又一个", "code": "S-3"}, headers=admin
        ).status_code
        == 409
    )
    bad = client.post(
        "/api/v1/schools",
        json={"name": "四中", "code": "S-4", "stage": "kindergarten"},
        headers=admin,
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "stage"
    for who in ("leader_a", "counselor_a", "ct_a1", "auditor"):
        response = client.post(
            "/api/v1/schools", json={"name": "五中", "code": "S-5"}, headers=world[who].headers
        )
        assert response.status_code == 403, who
    # A senior school teaches grades 10 to 12 only.
    path = f"/api/v1/schools/{school_id}/classes"
    grade7 = client.post(
        path, json={"name": "高一1班", "grade": 7, "school_year": "2026-2027"}, headers=admin
    )
    assert grade7.status_code == 422 and grade7.json()["errors"][0]["field"] == "grade"
    grade10 = client.post(
        path, json={"name": "高一1班", "grade": 10, "school_year": "2026-2027"}, headers=admin
    )
    assert grade10.status_code == 201


def test_leaders_create_classes_in_their_school_only(client, world):
    leader = world["leader_a"].headers
    body = {"name": "七年级3班", "grade": 7, "school_year": "2026-2027"}
    assert (
        client.post(
            f"/api/v1/schools/{world.school_a}/classes", json=body, headers=leader
        ).status_code
        == 201
    )
    assert (
        client.post(
            f"/api/v1/schools/{world.school_a}/classes", json=body, headers=leader
        ).status_code
        == 409
    )
    assert (
        client.post(
            f"/api/v1/schools/{world.school_b}/classes", json=body, headers=leader
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/schools/{uuid.uuid4()}/classes", json=body, headers=leader
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/schools/{world.school_a}/classes",
            json=body,
            headers=world["counselor_a"].headers,
        ).status_code
        == 403
    )
    bad_year = client.post(
        f"/api/v1/schools/{world.school_a}/classes",
        json={**body, "name": "七年级4班", "school_year": "2026-2028"},
        headers=leader,
    )
    assert bad_year.status_code == 422 and bad_year.json()["errors"][0]["field"] == "school_year"


def test_schools_and_classes_are_listed_within_reach(client, world):
    assert [
        s["id"]
        for s in client.get("/api/v1/schools", headers=world["ct_a1"].headers).json()["items"]
    ] == [str(world.school_a)]
    admin = client.get("/api/v1/schools", headers=world["admin"].headers).json()["items"]
    assert {s["id"] for s in admin} == {str(world.school_a), str(world.school_b)}
    assert {s["school_year"] for s in admin} == {"2026-2027"}
    assert client.get("/api/v1/schools", headers=world["auditor"].headers).status_code == 403
    for who in ("ct_a1", "teacher_a", "counselor_a", "leader_a", "admin"):
        response = client.get(
            f"/api/v1/schools/{world.school_a}/classes", headers=world[who].headers
        )
        assert response.status_code == 200, who
        assert {c["id"] for c in response.json()["items"]} == {
            str(world.class_a1),
            str(world.class_a2),
        }
    assert (
        client.get(
            f"/api/v1/schools/{world.school_b}/classes", headers=world["ct_a1"].headers
        ).status_code
        == 404
    )
    assert (
        client.get(
            f"/api/v1/schools/{world.school_a}/classes", headers=world["auditor"].headers
        ).status_code
        == 403
    )
    older = client.get(
        f"/api/v1/schools/{world.school_a}/classes?school_year=2025-2026",
        headers=world["leader_a"].headers,
    )
    assert older.status_code == 200 and older.json()["items"] == []


@pytest.mark.parametrize(
    ("name", "grade", "expected"),
    [
        ("七年级1班", 7, "八年级1班"),
        ("十一年级2班", 11, "十二年级2班"),
        ("一年级1班", 1, "二年级1班"),
        ("初一(2)班", 7, "初二(2)班"),
        ("高二3班", 11, "高三3班"),
        ("7年级1班", 7, "8年级1班"),
        ("Grade 7 A", 7, "Grade 8 A"),
        ("火箭班", 8, "火箭班"),
    ],
)
def test_class_names_move_up_a_grade_where_they_say_one(name, grade, expected):
    assert next_class_name(name, grade) == expected
