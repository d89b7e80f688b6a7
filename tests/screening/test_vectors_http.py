"""Acceptance 1: every scoring vector goes through the real import route and comes back
from ``GET /api/v1/screening/results/{id}`` exactly as the vectors say; rejected vectors
come back as bad rows (and then nothing of their file is stored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.screening.helpers import add_students, create_round, grant_all, result_ids, table, upload

VECTORS = json.loads((Path(__file__).parent / "vectors" / "scoring.json").read_text("utf-8"))
ITEMS = {"phq9": 9, "gad7": 7, "sdq_self": 25}


@pytest.mark.parametrize("code", sorted(VECTORS))
def test_every_vector_round_trips_through_the_api(client, db, world, code):
    cases = VECTORS[code]
    numbers = add_students(db, world.class_a1, len(cases), prefix=f"V{code.upper()}")
    round_id = create_round(client, world, instrument=code, class_ids=[world.class_a1])
    grant_all(db, round_id, list(numbers.values()))
    rows = list(zip(numbers, (case["answers"] for case in cases), strict=True))
    expected_bad = [n for n, case in enumerate(cases, start=1) if case.get("rejected")]

    whole = upload(client, world, round_id, table(rows, items=ITEMS[code], extra_columns=True))
    if expected_bad:
        assert whole.status_code == 422, whole.text
        body = whole.json()
        assert body["imported"] == 0
        assert [r["row"] for r in body["rejected"]] == expected_bad
        assert result_ids(db, round_id) == {}
        rows = [row for n, row in enumerate(rows, start=1) if n not in expected_bad]
        whole = upload(client, world, round_id, table(rows, items=ITEMS[code]))
    assert whole.status_code == 200, whole.text
    assert whole.json() == {"imported": len(rows), "rejected": []}

    stored = result_ids(db, round_id)
    counselor = world["counselor_a"].headers
    for number, case in zip(numbers, cases, strict=True):
        if case.get("rejected"):
            assert numbers[number] not in stored
            continue
        response = client.get(
            f"/api/v1/screening/results/{stored[numbers[number]]}", headers=counselor
        )
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["instrument"] == code
        assert got["answers"] == case["answers"]
        assert got["total"] == case["total"]
        assert got["band"] == case["band"]
        assert got["flags"] == case["flags"]
        assert got["status"] == ("pending_review" if case["needs_review"] else "below_threshold")
        assert got["scales"] == case.get("scales", {})
        assert got["scale_bands"] == case.get("scale_bands", {})
        assert got["review"] is None
