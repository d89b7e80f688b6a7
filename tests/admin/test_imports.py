"""The roster import (``casemgr.students.imports``): formats, bad rows, duplicates, reach,
crafted input and parallel imports (acceptance 2)."""

from __future__ import annotations

import asyncio
import codecs
import io
import json
from datetime import datetime
from typing import Any

import pytest
from click.testing import CliRunner

from casemgr.cli import main as cli
from casemgr.students import imports
from tests.admin.helpers import (
    HEADER,
    XLSX_TYPE,
    actions,
    count_students,
    csv_body,
    roster_rows,
    upload,
    xlsx_body,
)
from tests.audit.helpers import seal, verify

CLASSES = ["七年级1班", "七年级2班"]


def leader_upload(client: Any, world: Any, body: bytes, media_type: str = "text/csv") -> Any:
    return upload(client, world.school_a, body, media_type, world["leader_a"].token)


def roster(client: Any, world: Any, class_id: Any) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/classes/{class_id}/students", headers=world["leader_a"].headers)
    assert response.status_code == 200
    return response.json()["items"]


@pytest.mark.slow
def test_one_bad_row_among_1500_refuses_the_whole_file(client, world, db):
    rows = roster_rows(CLASSES, 1500, first=100)
    rows[1136][4] = "2013-02-30"  # data row 1137: an impossible birth date
    before = count_students(db)
    response = leader_upload(client, world, xlsx_body(rows), XLSX_TYPE)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["created"] == 0
    assert body["rejected"] == [
        {
            "row": 1137,
            "error": "birth_date: a date such as 2013-05-06 (2013-5-6, 2013/05/06 also work)",
        }
    ]
    assert "2013-02-30" not in response.text
    assert count_students(db) == before
    assert actions(db, "student:create")[-1][2] is not None  # only the world's own students
    assert len(actions(db, "student:create")) == before
    refused = actions(db, "student:import")
    assert [(o, d) for o, d, *_ in refused] == [("deny", '{"rejected":1,"status":422}')]


def test_csv_encodings_column_order_and_cell_spellings(client, world, db):
    rows = roster_rows(CLASSES, 6, first=500)
    order = [9, 3, 0, 2, 1, 4, 5, 8, 6, 7]
    header = ["note", *[HEADER[i] for i in order]]
    shuffled = [["ignored", *[row[i] for i in order]] for row in rows]
    shuffled[0][header.index("gender")] = "男"
    shuffled[1][header.index("birth_date")] = "2013-5-6"
    shuffled[2][header.index("birth_date")] = "2013/05/06"
    shuffled[1][header.index("national_id")] = ""
    shuffled[2][header.index("national_id")] = ""
    for n, (encoding, prefix) in enumerate(
        [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("gb18030", b"")]
    ):
        part = shuffled[n * 2 : n * 2 + 2]
        body = prefix + csv_body(part, encoding=encoding, header=header)
        response = leader_upload(client, world, body)
        assert response.status_code == 200, (encoding, response.text)
        assert response.json() == {"created": 2, "rejected": []}
    names = {e["student_no"]: e for e in roster(client, world, world.class_a1)}
    names |= {e["student_no"]: e for e in roster(client, world, world.class_a2)}
    for row in rows:
        assert names[row[1]]["full_name"] == row[2]
    first = client.get(
        f"/api/v1/students/{names[rows[1][1]]['id']}", headers=world["leader_a"].headers
    ).json()
    assert first["birth_date"] == "2013-05-06" and first["national_id"] is None
    assert first["guardians"] == [{"name": rows[1][7], "relation": "母亲", "phone": rows[1][9]}]
    assert (
        client.get(
            f"/api/v1/students/{names[rows[0][1]]['id']}", headers=world["leader_a"].headers
        ).json()["gender"]
        == "male"
    )


def test_xlsx_date_cells_and_numbers(client, world):
    rows: list[list[Any]] = roster_rows(CLASSES, 2, first=700)
    rows[0][4] = datetime(2013, 3, 9)
    rows[0][5] = None  # (its national ID holds another birth date)
    rows[0][1] = 20260701  # a student number typed as a number
    rows[1][9] = 13900001234  # a phone number typed as a number
    response = leader_upload(client, world, xlsx_body(rows), XLSX_TYPE)
    assert response.status_code == 200, response.text
    numbers = {e["student_no"] for e in roster(client, world, world.class_a1)} | {
        e["student_no"] for e in roster(client, world, world.class_a2)
    }
    assert "20260701" in numbers


def test_bad_rows_are_named_without_their_values(client, world, db):
    rows = roster_rows(CLASSES, 12, first=800)
    rows[0][0] = "九年级9班"  # no such class
    rows[1][3] = "other"
    rows[2][5] = rows[2][5][:-1] + ("0" if rows[2][5][-1] != "0" else "1")  # check digit
    rows[3][2] = ""
    rows[4][7] = ""  # guardian name missing, relation and phone given
    rows[5][1] = rows[6][1]  # the same student number twice
    rows[7][4], rows[7][5] = rows[8][4], rows[8][5]  # the same national ID twice
    rows[9][9] = "call me"  # phone
    rows[10][5] = "1.10105E+17"  # how Excel writes a long number into CSV
    rows[11][2] = "王\u202e小明"  # a bidirectional override
    response = leader_upload(client, world, csv_body(rows))
    assert response.status_code == 422
    rejected = {item["row"]: item["error"] for item in response.json()["rejected"]}
    assert rejected[1].startswith("class_name: no class of that name")
    assert rejected[2] == "gender: female, male, 女 or 男"
    assert rejected[3] == "national_id: check digit does not match (GB 11643)"
    assert rejected[4].startswith("full_name: ")
    assert rejected[5].startswith("guardian_name: must not be blank")
    assert rejected[7] == "student_no: the same as row 6"
    assert rejected[9] == "national_id: the same as row 8"
    assert rejected[10].startswith("guardian_phone: ")
    assert rejected[11].startswith("national_id: written as a number")
    assert (
        rejected[12] == "full_name: must not contain bidirectional override or isolate characters"
    )
    for row in rows:
        for column in (1, 2, 5, 6, 9):  # student_no, full_name, national_id, address, phone
            if row[column]:
                assert row[column] not in response.text
    assert count_students(db, world.school_a) == 3


def test_registered_students_are_bad_rows_never_overwritten(client, world, db):
    # The world's a1_first is NO00001 in school A; b1_first's national ID is school B's.
    from tests.factories import student_payload

    rows = roster_rows(CLASSES, 3, first=900)
    rows[0][1] = "NO00001"
    b1 = student_payload(world.class_b1, 4)
    rows[1][4], rows[1][5] = b1["birth_date"], b1["national_id"]
    response = leader_upload(client, world, csv_body(rows))
    assert response.status_code == 422
    rejected = {item["row"]: item["error"] for item in response.json()["rejected"]}
    assert rejected[1] == imports.STUDENT_NO_TAKEN
    assert rejected[2] == imports.NATIONAL_ID_TAKEN
    assert "/api/v1/students/transfers" in rejected[2]
    assert "测试学校乙" not in response.text and "T-B" not in response.text
    a1 = client.get(
        f"/api/v1/students/{world.students['a1_first']}", headers=world["leader_a"].headers
    )
    assert a1.json()["full_name"] == "测试学生001"
    # Each registered row is a refusal in the trail, as POST /api/v1/students leaves one
    # (a black-box finding: a file asked about many national IDs with one quiet event).
    leader = db.id(world["leader_a"].id)
    refusals = db.execute(
        "SELECT action, resource_type, detail FROM audit_events"
        " WHERE outcome = 'deny' AND actor_id = :a ORDER BY seq",
        {"a": leader},
    )
    assert [(r[0], r[1]) for r in refusals] == [
        ("student:import", "school"),
        ("student:create", "student"),
        ("student:create", "student"),
    ]
    assert all("duplicate" in str(r[2]) for r in refusals[1:])


def test_header_problems_are_row_0(client, world):
    body = csv_body([["七年级1班", "S1", "名字"]], header=["class_name", "student_no", "full_name"])
    response = leader_upload(client, world, body)
    assert response.status_code == 422
    assert response.json()["rejected"] == [
        {"row": 0, "error": "header: missing column(s) gender, birth_date"}
    ]
    twice = leader_upload(client, world, csv_body([], header=[*HEADER, "gender"]))
    assert twice.json()["rejected"][0]["error"] == "header: column gender appears twice"
    empty = leader_upload(client, world, csv_body([]))
    assert empty.json()["rejected"] == [{"row": 0, "error": "file: has no data rows"}]
    not_xlsx = leader_upload(client, world, b"class_name\n", XLSX_TYPE)
    assert not_xlsx.status_code == 422
    assert not_xlsx.json()["rejected"][0]["row"] == 0


def test_formula_payloads_and_crafted_unicode_are_stored_as_text(client, world, db):
    rows = roster_rows(CLASSES, 3, first=950)
    rows[0][2] = "=cmd|' /C calc'!A0"
    rows[1][2] = "+SUM(1,2)"
    rows[2][2] = "Ａｌｉｃｅ😀"  # fullwidth letters and an emoji are names too
    rows[2][1] = "Ｓ９５２"  # fullwidth digits fold to ASCII
    response = leader_upload(client, world, csv_body(rows))
    assert response.status_code == 200, response.text
    found = {
        e["full_name"]: e
        for e in roster(client, world, world.class_a1) + roster(client, world, world.class_a2)
    }
    assert {"=cmd|' /C calc'!A0", "+SUM(1,2)", "Ａｌｉｃｅ😀"} <= set(found)
    assert found["Ａｌｉｃｅ😀"]["student_no"] == "S952"
    raw = str(db.execute("SELECT * FROM students"))
    assert "cmd|" not in raw and "SUM(" not in raw


def test_a_zero_width_joiner_in_a_name_is_refused(client, world):
    rows = roster_rows(CLASSES, 1, first=990)
    rows[0][2] = "王\u200d明"
    response = leader_upload(client, world, csv_body(rows))
    assert response.status_code == 422
    assert response.json()["rejected"][0]["error"].startswith(
        "full_name: must not contain invisible"
    )


def test_only_the_school_leader_imports(client, world):
    body = csv_body(roster_rows(CLASSES, 1, first=995))
    for who in ("ct_a1", "teacher_a", "counselor_a", "admin", "auditor"):
        response = upload(client, world.school_a, body, "text/csv", world[who].token)
        assert response.status_code == 403, who
    assert (
        upload(client, world.school_b, body, "text/csv", world["leader_a"].token).status_code == 404
    )
    wrong_type = client.post(
        f"/api/v1/schools/{world.school_a}/students/import",
        content=body,
        headers={**world["leader_a"].headers, "Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 415


def test_two_imports_of_one_file_at_once_create_its_students_once(world, db):
    rows = roster_rows(CLASSES, 40, first=1200)
    data = csv_body(rows)

    async def main(sessions: Any) -> list[Any]:
        async def one() -> Any:
            async with sessions() as session, session.begin():
                return await imports.import_roster(
                    session,
                    db.crypto,
                    world.school_a,
                    imports.open_roster(io.BytesIO(data), "text/csv"),
                    actor=None,
                )

        return await asyncio.gather(one(), one(), return_exceptions=True)

    outcomes = db.run(main)
    created = [o for o in outcomes if isinstance(o, imports.ImportResult)]
    refused = [o for o in outcomes if isinstance(o, imports.RosterRejected)]
    assert len(created) == 1 and len(refused) == 1, outcomes
    assert len(refused[0].extra["rejected"]) == 40
    assert count_students(db, world.school_a) == 3 + 40


def test_an_import_leaves_a_verifiable_trail(client, world, db, settings):
    rows = roster_rows(CLASSES, 25, first=1300)
    assert leader_upload(client, world, csv_body(rows)).status_code == 200
    events = actions(db, "student:create")
    assert len(events) == 4 + 25
    assert all(e[2] is not None and e[0] == "allow" for e in events)
    assert actions(db, "student:import")[-1][1] == '{"created":25}'

    seal(db, settings)
    result = verify(db, settings)
    assert result.ok and result.checked >= 29, result


def test_the_command_line_import(world, settings, tmp_path, db):
    env = {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(tmp_path / "var"),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
    }
    good = tmp_path / "roster.xlsx"
    good.write_bytes(xlsx_body(roster_rows(CLASSES, 30, first=1400)))
    result = CliRunner().invoke(
        cli, ["students", "import", "--school-id", str(world.school_a), str(good)], env=env
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"created": 30, "rejected": []}
    assert "importing students" in result.stderr
    bad = tmp_path / "roster.csv"
    bad.write_bytes(csv_body(roster_rows(CLASSES, 2, first=1400), encoding="gb18030"))
    refused = CliRunner().invoke(
        cli, ["students", "import", "--school-id", str(world.school_a), str(bad)], env=env
    )
    assert refused.exit_code == 2
    last = json.loads(refused.stdout.strip().splitlines()[-1])
    assert last["created"] == 0 and [r["row"] for r in last["rejected"]] == [1, 2]
    assert "row 1: student_no" in refused.stderr
    assert count_students(db, world.school_a) == 3 + 30


def test_an_upload_over_the_limit_is_refused_unread(client, world, db):
    body = csv_body(roster_rows(CLASSES, 1, first=3100)) + b"x" * (imports.MAX_BODY_BYTES + 1)
    response = leader_upload(client, world, body)
    assert response.status_code == 413
    assert count_students(db, world.school_a) == 3


def _with_empty_cells(body: bytes, cells: int, row: int = 2) -> bytes:
    """The workbook ``body`` with ``cells`` empty cells (``<c/>``) added to its ``row``-th
    row: a few kilobytes packed, seconds of parsing if it were parsed (a black-box attack)."""
    import re
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(body))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.startswith("xl/worksheets/"):
                ends = [m.end() for m in re.finditer(rb"<row[^>]*>", data)]
                at = ends[row - 1]
                data = data[:at] + b"<c/>" * cells + data[at:]
            target.writestr(item, data)
    return out.getvalue()


def test_a_workbook_declaring_too_many_cells_is_refused_before_parsing(client, world, db):
    from casemgr import tabular
    from tests.admin.helpers import xlsx_body

    honest = xlsx_body(roster_rows(CLASSES, 2, first=4100))
    wide = _with_empty_cells(honest, tabular.MAX_XLSX_ROW_CELLS + 1)
    assert len(wide) < 64 * 1024  # small on the wire
    response = leader_upload(client, world, wide, tabular.XLSX)
    assert response.status_code == 422
    rejected = response.json()["rejected"]
    assert rejected == [
        {"row": 1, "error": f"file: a row has more than {tabular.MAX_XLSX_ROW_CELLS} cells"}
    ]
    # Up to the limit the same workbook imports (empty cells are empty columns).
    fine = _with_empty_cells(honest, 10)
    assert leader_upload(client, world, fine, tabular.XLSX).status_code == 200
    assert count_students(db, world.school_a) == 3 + 2


def test_cells_are_counted_across_read_chunks(monkeypatch):
    """The count holds whatever the chunking: tags cut at a chunk's end count once."""
    import zipfile

    from casemgr import tabular

    row = b"<row r='1'>" + b'<c r="A1" t="s"><v>0</v></c>' * 40 + b"</row>"
    sheet = (
        b"<worksheet><cols><col min='1'/></cols><sheetData>"
        + row * 50
        + b"</sheetData></worksheet>"
    )
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
    for chunk in (7, 13, 64, 1000):
        monkeypatch.setattr(tabular, "READ_CHUNK_BYTES", chunk)
        monkeypatch.setattr(tabular, "MAX_XLSX_CELLS", 2000)
        packed.seek(0)
        tabular._check_archive(packed)  # exactly 2,000 cells: accepted
        monkeypatch.setattr(tabular, "MAX_XLSX_CELLS", 1999)
        packed.seek(0)
        with pytest.raises(tabular.TableError, match="more than 1999 cells"):
            tabular._check_archive(packed)
        monkeypatch.setattr(tabular, "MAX_XLSX_CELLS", 2000)
        monkeypatch.setattr(tabular, "MAX_XLSX_ROW_CELLS", 39)
        packed.seek(0)
        with pytest.raises(tabular.TableError, match="more than 39 cells"):
            tabular._check_archive(packed)
        monkeypatch.setattr(tabular, "MAX_XLSX_ROW_CELLS", 40)
