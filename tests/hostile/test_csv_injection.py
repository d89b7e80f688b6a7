"""Formula injection (CSV injection): cells a spreadsheet would run never leave the service.

Names and notes are free text, so a payload such as ``=cmd|' /C calc'!A0`` is either
refused by the text rule (a leading tab or carriage return in a one-line field) or kept
as text. Nothing the service hands out is a spreadsheet today: the export is JSON and the
case file a PDF. Every answer of every GET route (and the PDF) is scanned here with the
payloads stored, and every answer of the schemathesis run too (``fuzzing.Run``): an
answer that is a table must come from ``casemgr.tabular.export_csv``, which neutralises
each cell, or these tests fail.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from litestar.routes import HTTPRoute

from casemgr.tabular import (
    CSV,
    SPREADSHEET_TYPES,
    XLSX,
    export_csv,
    neutralise_cell,
    unneutralised_cells,
    write_csv,
)
from tests.access.scene import Scene
from tests.factories import student_payload
from tests.hostile.fuzzing import fill, real_path_parameters
from tests.web.helpers import csrf_of, sign_in

PAYLOADS = [
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(1)",
    '=HYPERLINK("http://127.0.0.1/?"&A1,"x")',
    "\t=1+1",
    "\r=1+1",
]
ONE_LINE_REFUSED = ("\t", "\r")  # the text rule refuses them in one-line fields


def test_every_trigger_is_neutralised_and_other_text_is_kept():
    for payload in PAYLOADS:
        assert neutralise_cell(payload) == "'" + payload
    for text in ("王小明", "O'Brien", "1+1", " =1", "", "'=already text"):
        assert neutralise_cell(text) == text
    body = export_csv([["full_name", "notes"], *([p, p] for p in PAYLOADS)])
    assert body.startswith(b"\xef\xbb\xbf")
    assert unneutralised_cells(body, CSV) == []
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert [row[0] for row in rows[1:]] == ["'" + p for p in PAYLOADS]


def test_the_scan_finds_what_a_spreadsheet_would_run():
    from openpyxl import Workbook

    raw = write_csv([["name", "notes"], *([p, "ok"] for p in PAYLOADS)])
    assert unneutralised_cells(raw, CSV) == [(n, 0) for n in range(1, len(PAYLOADS) + 1)]
    workbook = Workbook()
    workbook.active.append(["name", "=1+1", "'=text"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    assert unneutralised_cells(buffer.getvalue(), XLSX) == [(0, 1)]
    assert unneutralised_cells(b"\x00\x01 not a workbook", XLSX) == [(0, 0)]


@pytest.fixture
def stored(client: Any, scene: Scene, db: Any) -> dict[str, str]:
    """The payloads in a student's name, address and guardian, and in notes."""
    world = scene.world
    headers = world["ct_a1"].headers
    stored: dict[str, str] = {}
    for n, payload in enumerate(PAYLOADS):
        number = 500 + n
        body = student_payload(
            world.class_a1,
            number,
            full_name=payload,
            address=payload,
            guardians=[{"name": payload, "relation": "母亲", "phone": "13900000000"}],
        )
        response = client.post("/api/v1/students", json=body, headers=headers)
        if payload.startswith(ONE_LINE_REFUSED):
            # Refused by the text rule, naming the fields, storing nothing.
            assert response.status_code == 422, response.text
            fields = {e["field"] for e in response.json()["errors"]}
            assert {"full_name", "address", "guardians[0].name"} <= fields
            assert payload not in response.text
        else:
            assert response.status_code == 201, response.text
            stored[payload] = response.json()["id"]
        case = scene.records["own"].case
        log = client.post(
            f"/api/v1/cases/{case}/support-logs",
            json={"occurred_on": "2026-09-07", "kind": "other", "notes": payload},
            headers=headers,
        )
        assert log.status_code == 201, log.text  # notes keep tabs and line breaks
    assert db.execute("SELECT count(*) FROM students")[0][0] == 5 + len(stored)
    return stored


def _get_routes(app: Any) -> list[str]:
    paths = []
    for route in app.routes:
        if (
            isinstance(route, HTTPRoute)
            and any("GET" in h.http_methods for h in route.route_handlers)
            and not route.path.startswith(("/static", "/schema"))
        ):
            paths.append(route.path_format)
    return paths


def test_payloads_are_kept_as_text_and_no_answer_is_a_spreadsheet(client, scene, app, stored):
    """Every GET route, API and pages, as each content role, plus the case file's PDF."""
    answered: dict[str, set[str]] = {}
    paths = _get_routes(app)
    assert len(paths) > 50
    student = next(iter(stored.values()))
    for role in ("ct_a1", "counselor_a", "leader_a"):
        ids = {**real_path_parameters(scene, role), "student_id": student}
        client.cookies.clear()
        sign_in(client, scene.world[role])
        for path in paths:
            headers = scene.world[role].headers if path.startswith("/api/") else {}
            response = client.get(fill(path, ids), headers=headers, follow_redirects=False)
            assert response.status_code < 500, (role, path)
            media_type = response.headers.get("content-type", "").split(";")[0]
            answered.setdefault(media_type, set()).add(path)
            if media_type in SPREADSHEET_TYPES:
                assert unneutralised_cells(response.content, media_type) == [], (role, path)
        page = client.get(f"/cases/{scene.records['own'].case}")
        pdf = client.post(
            f"/cases/{scene.records['own'].case}/export.pdf",
            data={"csrf_token": csrf_of(page.text)},
        )
        if role == "ct_a1":
            assert pdf.headers["content-type"] == "application/pdf", pdf.text[:200]
    # What reaches a reader today: JSON, pages, a PDF; never a spreadsheet.
    assert not set(answered) & SPREADSHEET_TYPES, answered
    export = client.get(f"/api/v1/students/{student}/export", headers=scene.world["ct_a1"].headers)
    assert export.headers["content-type"].startswith("application/json")
    assert export.json()["student"]["full_name"] in stored
