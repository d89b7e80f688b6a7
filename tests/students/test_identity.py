"""Issue 5, finding 8: one normalisation of national IDs for create, edit and lookup.

Arabic-Indic digits passed ``str.isdigit`` and slipped past duplicate checks and lookup; an
ID whose embedded birth date contradicted ``birth_date`` was accepted; a lookup with spaces
around the ID failed where creation stripped them.
"""

from __future__ import annotations

from datetime import date

import pytest

from casemgr.students.identity import national_id_problem, normalise_national_id
from tests.factories import national_id, student_payload

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def test_other_scripts_digits_are_refused():
    valid = national_id(date(2013, 2, 2), 1)
    assert national_id_problem(normalise_national_id(valid)) is None
    disguised = normalise_national_id(valid.translate(ARABIC_INDIC))
    assert national_id_problem(disguised) is not None


def test_fullwidth_digits_fold_to_ascii():
    valid = national_id(date(2013, 2, 2), 1)
    assert normalise_national_id(valid.translate(FULLWIDTH)) == valid


def test_birth_date_must_match_the_one_inside_the_id():
    valid = national_id(date(2013, 2, 2), 1)
    assert national_id_problem(valid, date(2013, 2, 2)) is None
    assert "birth date" in (national_id_problem(valid, date(2013, 2, 3)) or "")


def test_create_refuses_arabic_indic_digits_and_a_contradicting_birth_date(client, world, db):
    ct = world["ct_a1"]
    before = db.execute("SELECT count(*) FROM students")[0][0]
    payload = student_payload(world.class_a1, 200)
    for change in (
        {"national_id": payload["national_id"].translate(ARABIC_INDIC)},
        {"birth_date": "2013-12-31"},
    ):
        r = client.post("/api/v1/students", json={**payload, **change}, headers=ct.headers)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "national_id"
    assert db.execute("SELECT count(*) FROM students")[0][0] == before


def test_a_disguised_copy_of_an_existing_id_cannot_become_a_second_student(client, world):
    existing = student_payload(world.class_a1, 1)  # a1_first, already enrolled
    copy = student_payload(
        world.class_b1,
        201,
        national_id=existing["national_id"].translate(ARABIC_INDIC),
        birth_date=existing["birth_date"],
    )
    r = client.post("/api/v1/students", json=copy, headers=world["ct_b1"].headers)
    assert r.status_code == 422
    fullwidth = {**copy, "national_id": existing["national_id"].translate(FULLWIDTH)}
    r = client.post("/api/v1/students", json=fullwidth, headers=world["ct_b1"].headers)
    assert r.status_code == 409  # the same ID, however it is typed


def test_edit_applies_the_same_rules(client, world):
    student = world.students["a1_second"]
    payload = student_payload(world.class_a1, 2)
    url = f"/api/v1/students/{student}"
    headers = world["ct_a1"].headers
    arabic = {"national_id": payload["national_id"].translate(ARABIC_INDIC)}
    assert client.patch(url, json=arabic, headers=headers).status_code == 422
    assert client.patch(url, json={"birth_date": "2013-12-30"}, headers=headers).status_code == 422
    other = student_payload(world.class_a1, 1)["national_id"].translate(FULLWIDTH)
    assert client.patch(url, json={"national_id": other}, headers=headers).status_code in (409, 422)


@pytest.mark.parametrize(
    "typed",
    [
        lambda v: f"  {v}  ",
        lambda v: v.lower(),
        lambda v: v.translate(FULLWIDTH),
    ],
    ids=["spaces", "lowercase-x", "fullwidth"],
)
def test_lookup_normalises_like_create(client, world, typed):
    serial = next(s for s in range(1000) if national_id(date(2013, 5, 6), s).endswith("X"))
    value = national_id(date(2013, 5, 6), serial)
    created = client.post(
        "/api/v1/students",
        json=student_payload(world.class_a1, 202, national_id=value, birth_date="2013-05-06"),
        headers=world["ct_a1"].headers,
    )
    assert created.status_code == 201, created.text
    found = client.post(
        "/api/v1/students/lookup",
        json={"national_id": typed(value)},
        headers=world["ct_a1"].headers,
    )
    assert found.status_code == 200, found.text
    assert [i["id"] for i in found.json()["items"]] == [created.json()["id"]]


def test_lookup_with_arabic_indic_digits_finds_nothing(client, world):
    value = student_payload(world.class_a1, 1)["national_id"]
    found = client.post(
        "/api/v1/students/lookup",
        json={"national_id": value.translate(ARABIC_INDIC)},
        headers=world["ct_a1"].headers,
    )
    assert found.status_code == 200
    assert found.json()["items"] == []
