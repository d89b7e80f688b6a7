"""Round progress: exact counts for counselors, suppressed counts for school leaders, and
no hidden count that can be worked out from what a leader is shown."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Any

import pytest

from casemgr.screening.progress import WIDTH, suppress
from tests.screening.helpers import add_students, consent, create_round, grant_all, table, upload

LOW = [0, 0, 0, 0, 0, 0, 0, 0, 0]
HIGH = [2, 2, 2, 2, 2, 2, 0, 0, 0]


@pytest.fixture
def progress_round(client, db, world) -> str:
    """A1: 14 students with consent (12 granted, 2 declined), 11 results, 3 pending review.
    A2: its one student plus 2 more, 2 granted, 1 result (pending)."""
    a1 = add_students(db, world.class_a1, 14, prefix="P")
    a2 = add_students(db, world.class_a2, 2, prefix="Q")
    round_id = create_round(client, world)
    ids = list(a1.values())
    grant_all(db, round_id, ids[:12])
    grant_all(db, round_id, ids[12:], decision="declined")
    grant_all(db, round_id, list(a2.values()))
    a1_rows = [(n, HIGH if i < 3 else LOW) for i, n in enumerate(list(a1)[:11])]
    assert upload(client, world, round_id, table(a1_rows)).status_code == 200
    assert upload(client, world, round_id, table([(next(iter(a2)), HIGH)])).status_code == 200
    return round_id


def rows_by_class(body: dict[str, Any], world: Any) -> dict[str, dict[str, Any]]:
    names = {str(world.class_a1): "a1", str(world.class_a2): "a2"}
    return {names[row["class_id"]]: row for row in body["classes"]}


def test_counselors_see_every_count(client, world, progress_round):
    response = client.get(
        f"/api/v1/screening/rounds/{progress_round}/progress",
        headers=world["counselor_a"].headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["k"] is None
    rows = rows_by_class(body, world)
    assert {k: v for k, v in rows["a1"].items() if k not in ("class_id", "class_name")} == {
        "consents_recorded": 14,
        "consents_granted": 12,
        "results_in": 11,
        "pending_review": 3,
        "suppressed": [],
    }
    assert rows["a2"]["consents_recorded"] == 2 and rows["a2"]["pending_review"] == 1
    assert body["total"]["results_in"] == 12 and body["total"]["pending_review"] == 4


def test_leaders_see_counts_under_k_suppressed_with_their_complements(
    client, world, progress_round
):
    response = client.get(
        f"/api/v1/screening/rounds/{progress_round}/progress",
        headers=world["leader_a"].headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["k"] == 10
    rows = rows_by_class(body, world)
    # A2's counts are all under 10; A1's pending review (3) too. The totals of the first
    # three columns are shown, so A1's counts there are hidden as complements.
    assert rows["a2"]["suppressed"] == [
        "consents_recorded",
        "consents_granted",
        "results_in",
        "pending_review",
    ]
    assert rows["a1"]["pending_review"] is None
    for column in ("consents_recorded", "consents_granted", "results_in"):
        assert rows["a1"][column] is None or body["total"][column] is None
    assert body["total"]["pending_review"] is None  # 4 < k
    for row in [*rows.values(), body["total"]]:
        for column in row["suppressed"]:
            assert row[column] is None
    text = response.text
    assert '"pending_review":3' not in text and '"pending_review":1' not in text


def test_progress_is_for_counselors_and_leaders(client, world, progress_round):
    for account in ("ct_a1", "teacher_a", "admin", "auditor"):
        response = client.get(
            f"/api/v1/screening/rounds/{progress_round}/progress", headers=world[account].headers
        )
        assert response.status_code == 403, account


def test_withdrawn_consent_leaves_the_counts(client, world, progress_round, db):
    first = add_students(db, world.class_a1, 1, prefix="W")
    student = next(iter(first.values()))
    assert consent(client, world, progress_round, student, "withdrawn").status_code == 201
    body = client.get(
        f"/api/v1/screening/rounds/{progress_round}/progress",
        headers=world["counselor_a"].headers,
    ).json()
    a1 = rows_by_class(body, world)["a1"]
    assert (a1["consents_recorded"], a1["consents_granted"]) == (15, 12)


# -- the suppression itself ---------------------------------------------------------------


def _row_candidates(shown: list[int | None], size: int | None, top: int) -> list[tuple[int, ...]]:
    """Every non-increasing row of ``WIDTH`` counts in [0, top] that agrees with the shown
    counts and the class size."""
    out = []
    for values in itertools.product(range(top + 1), repeat=WIDTH):
        if any(values[j] < values[j + 1] for j in range(WIDTH - 1)):
            continue
        if size is not None and values[0] > size:
            continue
        if all(s is None or s == v for s, v in zip(shown, values, strict=True)):
            out.append(values)
    return out


def derivable_cells(published: Any, sizes: list[int | None], top: int) -> list[tuple[int, int]]:
    """Hidden cells that take one value in every table consistent with what is published
    (two classes; brute force with the column sums matched through a dictionary)."""
    first, second = (_row_candidates(published.rows[i], sizes[i], top) for i in range(2))
    totals = published.total
    summed = [j for j in range(WIDTH) if totals[j] is not None]
    by_need: dict[tuple[int, ...], list[tuple[int, ...]]] = defaultdict(list)
    for b in second:
        by_need[tuple(b[j] for j in summed)].append(b)
    values: dict[tuple[int, int], set[int]] = defaultdict(set)
    for a in first:
        need = tuple(totals[j] - a[j] for j in summed)  # type: ignore[operator]
        for b in by_need.get(need, ()):
            # Hidden totals must still be consistent with the chain (they are sums).
            for j in range(WIDTH):
                values[(0, j)].add(a[j])
                values[(1, j)].add(b[j])
    hidden = [(i, j) for i in range(2) for j in range(WIDTH) if published.rows[i][j] is None]
    return [cell for cell in hidden if len(values[cell]) <= 1]


def random_row(rng: random.Random, top: int) -> list[int]:
    values = sorted((rng.randint(0, top) for _ in range(WIDTH)), reverse=True)
    return values


@pytest.mark.parametrize("seed", range(60))
def test_no_hidden_count_can_be_worked_out(seed):
    rng = random.Random(seed)
    k, top = 5, 9
    rows = [random_row(rng, top) for _ in range(2)]
    sizes: list[int | None] = [row[0] + rng.randint(0, 2) for row in rows]
    published = suppress(rows, k, sizes)
    # Everything under k is hidden; what is shown is true.
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if published.rows[i][j] is not None:
                assert published.rows[i][j] == value and value >= k
    for j in range(WIDTH):
        total = rows[0][j] + rows[1][j]
        assert published.total[j] in (None, total)
        if total < k:
            assert published.total[j] is None
    # No hidden count is pinned down (except a zero forced by an empty class).
    pinned = derivable_cells(published, sizes, top + 2)
    assert [(i, j) for i, j in pinned if sizes[i]] == []


def test_a_lone_suppressed_cell_gets_a_complement():
    published = suppress([[30, 25, 20, 3], [28, 24, 18, 12]], 10)
    assert published.rows[0][3] is None and published.rows[1][3] is None
    assert published.total[3] == 15


def test_counselors_get_the_table_unchanged():
    rows = [[3, 2, 1, 0], [12, 11, 10, 2]]
    published = suppress(rows, 0)
    assert published.rows == rows
    assert published.total == [15, 13, 11, 2]
