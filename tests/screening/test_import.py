"""The result import: encodings and formats, bad rows, all-or-nothing, odd and hostile files.

Acceptance 2 (GB18030 and XLSX import identically; one bad row among 2,000 refuses the
whole file with its number) and acceptance 4 (rows of students whose consent is declined
or withdrawn are refused).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from casemgr.tabular import CSV, XLSX, write_csv
from tests.screening.helpers import (
    add_students,
    consent,
    create_round,
    grant_all,
    result_ids,
    table,
    upload,
    xlsx_bytes,
)

ANSWERS = [1, 0, 2, 1, 0, 3, 1, 0, 0]


def stored_answers(
    client: Any, world: Any, db: Any, round_id: str, every: int = 1
) -> dict[str, Any]:
    """Each stored result as the API returns it (every ``every``-th student by id)."""
    out = {}
    found = sorted(result_ids(db, round_id).items(), key=lambda item: str(item[0]))
    for student_id, result_id in found[::every]:
        got = client.get(
            f"/api/v1/screening/results/{result_id}", headers=world["counselor_a"].headers
        ).json()
        out[str(student_id)] = (got["answers"], got["total"], got["band"], got["status"])
    return out


@pytest.fixture
def big_class(db, world):
    numbers = add_students(db, world.class_a1, 2000, prefix="G")
    return numbers


def many_rows(numbers: dict[str, Any]) -> list[tuple[str, list[int]]]:
    return [(number, [(n + i) % 4 for i in range(9)]) for n, number in enumerate(numbers, start=1)]


def test_gb18030_csv_and_xlsx_import_identically(client, db, world, big_class):
    rows = many_rows(big_class)
    # Chinese text in the columns the import ignores makes the encoding matter.
    cells = table(rows, extra_columns=True)
    first = create_round(client, world, class_ids=[world.class_a1])
    second = create_round(client, world, class_ids=[world.class_a1])
    grant_all(db, first, list(big_class.values()))
    grant_all(db, second, list(big_class.values()))

    gb = write_csv(cells, "gb18030")
    assert gb != write_csv(cells, "utf-8")  # the file really is GB18030, not ASCII
    response = upload(client, world, first, gb)
    assert response.status_code == 200, response.text[:500]
    assert response.json() == {"imported": 2000, "rejected": []}
    response = upload(client, world, second, xlsx_bytes(cells), content_type=XLSX)
    assert response.status_code == 200, response.text[:500]
    assert response.json() == {"imported": 2000, "rejected": []}

    # Both rounds hold a result for the same 2,000 students; every tenth (200 of them, every
    # answer pattern of the file many times over) is read back through the API and compared.
    assert set(result_ids(db, first)) == set(result_ids(db, second)) == set(big_class.values())
    a = stored_answers(client, world, db, first, every=10)
    b = stored_answers(client, world, db, second, every=10)
    assert len(a) == 200
    assert a == b


def test_one_bad_row_among_2000_refuses_the_whole_file(client, db, world, big_class):
    rows = many_rows(big_class)
    rows[1233] = (rows[1233][0], [*rows[1233][1][:4], 7, *rows[1233][1][5:]])
    round_id = create_round(client, world, class_ids=[world.class_a1])
    grant_all(db, round_id, list(big_class.values()))
    for body, content_type in (
        (write_csv(table(rows), "gb18030"), CSV),
        (xlsx_bytes(table(rows)), XLSX),
    ):
        response = upload(client, world, round_id, body, content_type=content_type)
        assert response.status_code == 422, response.text[:500]
        body_json = response.json()
        assert body_json["imported"] == 0
        assert body_json["rejected"] == [{"row": 1234, "error": "q5: answer out of range 0-3"}]
        assert result_ids(db, round_id) == {}


@pytest.fixture
def small_round(client, db, world):
    """A round of class A1 with three more students; number -> id."""
    numbers = add_students(db, world.class_a1, 3, prefix="S")
    round_id = create_round(client, world, class_ids=[world.class_a1])
    return round_id, numbers


def test_every_bad_row_is_named_with_its_reason_and_nothing_is_stored(
    client, db, world, small_round
):
    round_id, numbers = small_round
    s1, s2, s3 = numbers
    grant_all(db, round_id, [numbers[s1], numbers[s2]])
    assert consent(client, world, round_id, numbers[s3], "declined").status_code == 201
    a2_student = add_students(db, world.class_a2, 1, prefix="OTHER")
    rows = [
        (s1, ANSWERS),  # good
        (s2, [0, 1, None, 1, 0, 0, 0, 0, 0]),  # missing answer: PHQ-9 refuses it
        (s3, ANSWERS),  # consent declined
        ("NOBODY", ANSWERS),  # no such student
        (next(iter(a2_student)), ANSWERS),  # a student of another class
        (s1, ANSWERS),  # twice in the file
        ("", ANSWERS),  # no student number
    ]
    response = upload(client, world, round_id, table(rows))
    assert response.status_code == 422, response.text
    assert response.json()["rejected"] == [
        {"row": 2, "error": "q3: answer missing"},
        {"row": 3, "error": "consent: not granted for this round"},
        {"row": 4, "error": "student_no: no student of this round's classes has this number"},
        {"row": 5, "error": "student_no: no student of this round's classes has this number"},
        {"row": 6, "error": "the student appears more than once in the file (row 1)"},
        {"row": 7, "error": "student_no: missing"},
    ]
    assert result_ids(db, round_id) == {}


def test_declined_and_withdrawn_consent_and_no_consent_are_refused(client, db, world, small_round):
    round_id, numbers = small_round
    s1, s2, s3 = numbers
    assert consent(client, world, round_id, numbers[s1], "declined").status_code == 201
    assert consent(client, world, round_id, numbers[s2], "granted").status_code == 201
    assert consent(client, world, round_id, numbers[s2], "withdrawn").status_code == 201
    response = upload(client, world, round_id, table([(s1, ANSWERS), (s2, ANSWERS), (s3, ANSWERS)]))
    assert response.status_code == 422
    assert [r["error"] for r in response.json()["rejected"]] == [
        "consent: not granted for this round"
    ] * 3
    # Granting again: the latest decision governs.
    assert consent(client, world, round_id, numbers[s2], "granted").status_code == 201
    assert upload(client, world, round_id, table([(s2, ANSWERS)])).status_code == 200


def test_a_file_with_a_header_only_imports_nothing(client, world, small_round):
    round_id, _ = small_round
    response = upload(client, world, round_id, table([]))
    assert response.status_code == 200
    assert response.json() == {"imported": 0, "rejected": []}


def test_a_result_already_imported_is_a_bad_row(client, db, world, small_round):
    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    s1, s2, _ = numbers
    assert upload(client, world, round_id, table([(s1, ANSWERS)])).status_code == 200
    response = upload(client, world, round_id, table([(s2, ANSWERS), (s1, ANSWERS)]))
    assert response.status_code == 422
    assert response.json()["rejected"] == [
        {"row": 2, "error": "a result of this student is already imported for this round"}
    ]
    assert set(result_ids(db, round_id)) == {numbers[s1]}


def test_tolerated_spellings(client, db, world, small_round):
    """Spaces around cells, full-width digits, a BOM, ``１.0``-style numbers, header case and
    full-width header letters, other columns, date spellings of survey tools."""
    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    s1, s2, s3 = numbers
    on = __import__("casemgr.clock", fromlist=["today"]).today()
    header = [
        "提交时间",
        " Student_No ",
        "ＡＤＭＩＮＩＳＴＥＲＥＤ_ＯＮ",
        *(f"ｑ{n}" for n in range(1, 10)),
    ]
    rows = [
        [
            "x",
            f" {s1} ",
            f" {on:%Y/%m/%d} 09:30:00",
            *(" ３ ", "0", "1", "2", "1", "0", "0", "0", "0"),
        ],
        [
            "y",
            s2,
            f"{on.year}年{on.month}月{on.day}日",
            *("1.0", "0", "0", "0", "0", "0", "0", "0", "0"),
        ],
        ["z", s3, on.isoformat(), *("0",) * 9],
    ]
    body = "\ufeff".encode() + write_csv([header, *rows])
    response = upload(client, world, round_id, body)
    assert response.status_code == 200, response.text
    assert response.json()["imported"] == 3
    got = stored_answers(client, world, db, round_id)
    assert got[str(numbers[s1])][0] == [3, 0, 1, 2, 1, 0, 0, 0, 0]
    assert got[str(numbers[s2])][0] == [1, 0, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("cell", "error"),
    [
        ("=1+2", "q1: not a whole number"),
        ("=cmd|' /C calc'!A0", "q1: not a whole number"),
        ("@SUM(A1)", "q1: not a whole number"),
        ("٣", "q1: not a whole number"),  # Arabic-Indic digit: not read as 3
        ("2\u202e", "q1: must not contain bidirectional override or isolate characters"),
        ("1\x00", "q1: must not contain control characters"),
        ("\u200b1", "q1: must not contain invisible format characters"),
        ("1.5", "q1: not a whole number"),
        ("99999999", "q1: not a whole number"),
        ("-1", "q1: answer out of range 0-3"),
    ],
)
def test_hostile_answer_cells_are_bad_rows_without_echoing_them(
    client, db, world, small_round, cell, error
):
    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    s1 = next(iter(numbers))
    rows = table([(s1, [0] * 9)])
    rows[1][2] = cell
    response = upload(client, world, round_id, rows)
    assert response.status_code == 422
    (rejected,) = response.json()["rejected"]
    assert rejected["row"] == 1
    assert rejected["error"].startswith(error)
    assert cell not in response.text
    assert result_ids(db, round_id) == {}


def test_hostile_student_numbers_and_dates_are_not_echoed(client, db, world, small_round):
    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    rows = table([('=HYPERLINK("http://x")', ANSWERS), ("S00001\u202e", ANSWERS)])
    rows[2][1] = "2026-13-45"
    response = upload(client, world, round_id, rows)
    assert response.status_code == 422
    assert [r["row"] for r in response.json()["rejected"]] == [1, 2]
    assert "HYPERLINK" not in response.text and "2026-13-45" not in response.text


def test_dates_outside_the_window_or_in_the_future_are_bad_rows(client, db, world, small_round):
    from datetime import timedelta

    from casemgr import clock

    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    s1, s2, _ = numbers
    rows = table([(s1, ANSWERS), (s2, ANSWERS)])
    rows[1][1] = (clock.today() + timedelta(days=1)).isoformat()
    rows[2][1] = (clock.today() - timedelta(days=60)).isoformat()
    response = upload(client, world, round_id, rows)
    assert [r["error"] for r in response.json()["rejected"]] == [
        "administered_on: must not be in the future",
        "administered_on: outside the round's window",
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"", CSV, "the file is empty: it needs a header row"),
        (b"student_no,administered_on,q1\r\n", CSV, "the header lacks the column(s) q2, q3"),
        (b"\x00\x01\x02\xff\xfe" * 100, CSV, "neither UTF-8 nor GB18030"),
        (b"PK\x03\x04 not really a zip", XLSX, "the file is not an XLSX workbook"),
        (b"student_no,administered_on\r\n", XLSX, "the file is not an XLSX workbook"),
        (b'"unterminated\r\n' + b"x" * 200_000, CSV, "not readable as CSV"),
    ],
    ids=["empty", "short-header", "binary", "fake-zip", "csv-as-xlsx", "huge-cell"],
)
def test_unreadable_files_are_refused_as_a_whole(
    client, db, world, small_round, body, content_type, error
):
    round_id, _ = small_round
    response = upload(client, world, round_id, body, content_type=content_type)
    assert response.status_code == 422, response.text
    (rejected,) = response.json()["rejected"]
    assert error in rejected["error"]


def test_a_zip_bomb_is_refused_before_it_is_unpacked(client, db, world, small_round):
    """Both a workbook that unpacks to far more than it weighs and one whose directory
    claims more than a table needs are refused without being unpacked."""
    import struct

    round_id, _ = small_round
    honest = io.BytesIO()
    with zipfile.ZipFile(honest, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"\x00" * (40 * 1024 * 1024))
    small = io.BytesIO()
    with zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"<x/>")
    lying = bytearray(small.getvalue())
    directory = lying.rindex(b"PK\x01\x02")
    lying[directory + 24 : directory + 28] = struct.pack("<I", 0xFFFFFFF0)
    for body in (honest.getvalue(), bytes(lying)):
        response = upload(client, world, round_id, body, content_type=XLSX)
        assert response.status_code == 422
        assert "unpacks to far more data" in response.json()["rejected"][0]["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/pdf"])
def test_other_content_types_are_refused_with_415(client, world, small_round, content_type):
    round_id, _ = small_round
    response = upload(client, world, round_id, b"student_no\r\n", content_type=content_type)
    assert response.status_code == 415


def test_the_body_size_is_bounded(client, world, small_round, monkeypatch):
    round_id, _ = small_round
    response = client.post(
        f"/api/v1/screening/rounds/{round_id}/results",
        content=b"x",
        headers={
            **world["counselor_a"].headers,
            "Content-Type": CSV,
            "Content-Length": str(65 * 1024 * 1024),
        },
    )
    assert response.status_code == 413


def test_a_non_granted_class_teacher_or_other_school_cannot_import(client, db, world, small_round):
    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    rows = table([(next(iter(numbers)), ANSWERS)])
    for account, status in (
        ("ct_a1", 403),
        ("teacher_a", 403),
        ("leader_a", 403),
        ("admin", 403),
        ("auditor", 403),
    ):
        assert upload(client, world, round_id, rows, account=account).status_code == status
    assert result_ids(db, round_id) == {}
    denials = db.execute(
        "SELECT count(*) FROM audit_events WHERE action = 'screening_result:import'"
        " AND outcome = 'deny'"
    )
    assert denials[0][0] == 5


def test_parallel_double_imports_of_one_round_store_each_result_once(
    client, db, world, small_round, settings
):
    """The same file sent twice at once, to two service processes: one imports, the other
    finds every row imported already."""
    import asyncio

    from litestar.testing import AsyncTestClient

    from casemgr.app import create_app

    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    body = write_csv(table([(number, ANSWERS) for number in numbers]))
    headers = {**world["counselor_a"].headers, "Content-Type": CSV}

    async def both() -> list[Any]:
        async with (
            AsyncTestClient(create_app(settings)) as one,
            AsyncTestClient(create_app(settings)) as two,
        ):
            path = f"/api/v1/screening/rounds/{round_id}/results"
            return list(
                await asyncio.gather(
                    one.post(path, content=body, headers=headers),
                    two.post(path, content=body, headers=headers),
                )
            )

    answers = asyncio.run(both())
    assert sorted(r.status_code for r in answers) == [200, 422], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 422).json()["rejected"]
    assert {r["error"] for r in refused} == {
        "a result of this student is already imported for this round"
    }
    assert len(result_ids(db, round_id)) == 3


def test_an_import_is_audited_per_result_and_with_counts(client, db, world, small_round):
    round_id, numbers = small_round
    grant_all(db, round_id, list(numbers.values()))
    assert (
        upload(client, world, round_id, table([(n, ANSWERS) for n in numbers])).status_code == 200
    )
    rows = db.execute(
        "SELECT resource_type, student_id, detail FROM audit_events"
        " WHERE action = 'screening_result:import' AND outcome = 'allow' ORDER BY seq"
    )
    per_result = [r for r in rows if r[0] == "screening_result"]
    assert len(per_result) == 3
    assert {str(r[1]).replace("-", "") for r in per_result} == {n.hex for n in numbers.values()}
    assert rows[-1][0] == "screening_round"
    assert '"imported":3' in rows[-1][2] and '"rows":3' in rows[-1][2]
    # Nothing of the content in the trail.
    trail = " ".join(str(r) for r in db.execute("SELECT detail FROM audit_events"))
    assert "moderate" not in trail and "pending_review" not in trail
