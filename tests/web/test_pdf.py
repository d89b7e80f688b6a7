"""The case file as a PDF: it opens, shows the name in Chinese, carries the watermark on
every page, is named by the neutral case code, and is an audit event."""

from __future__ import annotations

import io
import subprocess
from typing import Any

from pypdf import PdfReader

from tests.web.helpers import post_form, sign_in


def export(client: Any, case_id: Any) -> Any:
    return post_form(client, f"/cases/{case_id}/export.pdf", {}, from_page=f"/cases/{case_id}")


def pages_text(content: bytes, pages: int, folder: Any) -> list[str]:
    """Each page's text as poppler's pdftotext reads it (CJK through the font's ToUnicode)."""
    path = folder / "case.pdf"
    path.write_bytes(content)
    return [
        subprocess.run(
            ["pdftotext", "-f", str(n), "-l", str(n), str(path), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for n in range(1, pages + 1)
    ]


def test_the_pdf_export(client, world, case_a1, db, tmp_path):
    sign_in(client, world["ct_a1"])
    for n in range(40):  # enough to run over several pages
        response = post_form(
            client,
            "/my/support-logs",
            {
                "case_id": str(case_a1),
                "occurred_on": "2026-11-30",
                "kind": "conversation",
                "notes": f"第{n}次谈心：学习和生活情况良好。",
            },
            from_page="/my",
        )
        assert response.status_code == 303
    response = export(client, case_a1)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["cache-control"] == "no-store"
    code = db.execute("SELECT code FROM case_files")[0][0]
    assert response.headers["content-disposition"] == f'attachment; filename="{code}.pdf"'

    reader = PdfReader(io.BytesIO(response.content))  # it opens
    assert len(reader.pages) >= 2
    text = pages_text(response.content, len(reader.pages), tmp_path)
    assert "测试学生001" in text[0] and "一人一册档案" in text[0]
    for page_text in text:  # the watermark, on every page: who exported it, and when
        assert "ct_a1 · 20" in page_text
    fonts = reader.pages[0]["/Resources"]["/Font"]
    embedded = [str(font.get_object()["/BaseFont"]) for font in fonts.values()]
    assert any("NotoSansCJK" in name for name in embedded)

    events = db.execute(
        "SELECT actor_id, outcome FROM audit_events WHERE action = 'student:export'"
        " AND student_id = :s",
        {"s": db.id(world.students["a1_first"])},
    )
    assert [(r[1]) for r in events] == ["allow"]


def test_no_export_for_a_mentor_or_out_of_reach(client, world, case_a1, db):
    sign_in(client, world["ct_b1"])
    assert export(client, case_a1).status_code == 404
    before = db.execute("SELECT count(*) FROM audit_events WHERE action = 'student:export'")
    assert before[0][0] == 0
