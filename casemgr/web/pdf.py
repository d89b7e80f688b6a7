"""The case file as a PDF (一人一册): CJK text, the reader's name and time on every page.

The document is built from what ``care.records.export_student`` returns (the same
export as ``GET /api/v1/students/{id}/export``, decided and audited there). Chinese text
needs a CJK font embedded in the file: Noto Sans CJK SC from Debian's ``fonts-noto-cjk``
(a TrueType collection, of which the Simplified Chinese face is picked by name); fpdf2
embeds only the glyphs used.

Every page carries a watermark naming the person who exported it and when, across the
page and in the footer, so that a printed or forwarded copy says whose it was.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fontTools.ttLib import TTCollection
from fpdf import FPDF

from casemgr.web import i18n

FONT_CANDIDATES = (
    os.environ.get("CASEMGR_PDF_FONT", ""),
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
)
FONT_FAMILY = "NotoSansCJK"
FACE = "Noto Sans CJK SC"


class FontMissing(RuntimeError):
    """No CJK font is installed (Debian: apt-get install fonts-noto-cjk)."""


@functools.cache
def cjk_font() -> tuple[Path, int]:
    """The CJK font file and, for a collection, the index of its Simplified Chinese face."""
    for candidate in FONT_CANDIDATES:
        if not candidate or not Path(candidate).is_file():
            continue
        path = Path(candidate)
        if path.suffix.lower() != ".ttc":
            return path, 0
        collection = TTCollection(str(path), lazy=True)
        try:
            for index, font in enumerate(collection.fonts):
                if font["name"].getDebugName(1) == FACE:
                    return path, index
        finally:
            collection.close()
    raise FontMissing("no CJK font found; install fonts-noto-cjk")


class CaseFilePdf(FPDF):
    def __init__(self, watermark: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.watermark = watermark
        path, index = cjk_font()
        self.add_font(FONT_FAMILY, "", str(path), collection_font_number=index)
        self.set_font(FONT_FAMILY, size=11)
        self.set_auto_page_break(auto=True, margin=18)
        self.set_margins(18, 18, 18)

    def header(self) -> None:
        # Across the page, light enough to read through, on every page.
        with self.local_context(text_color=(205, 205, 205)):
            self.set_font(FONT_FAMILY, size=26)
            with self.rotation(35, x=self.w / 2, y=self.h / 2):
                width = self.get_string_width(self.watermark)
                self.text(x=(self.w - width) / 2, y=self.h / 2, text=self.watermark)
        self.set_font(FONT_FAMILY, size=11)
        self.set_y(12)

    def footer(self) -> None:
        self.set_y(-13)
        with self.local_context(text_color=(80, 80, 80)):
            self.set_font(FONT_FAMILY, size=8)
            self.cell(0, 5, f"{self.watermark} · {self.page_no()}/{{nb}}", align="C")


def render_case_pdf(
    document: dict[str, Any],
    case_id: str,
    *,
    viewer: str,
    exported_at: datetime,
    lang: str,
    gettext: Callable[[str], str],
) -> bytes:
    """The PDF of one case file of ``document`` (an export), in the reader's language."""
    _ = gettext
    stamp = f"{viewer} · {i18n.show_datetime(exported_at, lang)}"
    pdf = CaseFilePdf(stamp)
    pdf.alias_nb_pages()
    pdf.set_title(_("Case file"))
    pdf.set_creator("casemgr")
    pdf.add_page()

    def day(value: Any) -> str:
        if isinstance(value, str) and value:
            try:
                value = date.fromisoformat(value[:10])
            except ValueError:
                return value
        return i18n.show_date(value, lang) if value else ""

    def heading(text: str) -> None:
        pdf.ln(3)
        pdf.set_font(FONT_FAMILY, size=14)
        pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT_FAMILY, size=11)

    def line(label: str, value: Any) -> None:
        if value in (None, ""):
            return
        pdf.multi_cell(0, 6, f"{label}: {value}", new_x="LMARGIN", new_y="NEXT")

    def para(text: str | None) -> None:
        if text:
            pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")

    def label(value: str) -> str:
        from casemgr.web.render import LABELS

        return _(LABELS[value]) if value in LABELS else value

    case = next((c for c in document.get("case_files", []) if str(c.get("id")) == case_id), None)
    student = document.get("student", {})
    pdf.set_font(FONT_FAMILY, size=18)
    pdf.multi_cell(
        0, 10, f"{_('Case file')} {case['code'] if case else ''}", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.set_font(FONT_FAMILY, size=11)

    heading(_("Student"))
    line(_("Name"), student.get("full_name"))
    line(_("Student no."), student.get("student_no"))
    line(_("Gender"), label(student.get("gender", "")))
    line(_("Birth date"), day(student.get("birth_date")))
    line(_("Address"), student.get("address"))
    for guardian in student.get("guardians") or []:
        name, relation = guardian.get("name", ""), guardian.get("relation", "")
        line(_("Guardian"), f"{name} ({relation}) {guardian.get('phone', '')}")

    if case is not None:
        heading(_("About the file"))
        line(_("Status"), label(case.get("status", "")))
        line(_("Opened"), day(case.get("opened_on")))
        line(_("Reason"), case.get("open_reason"))
        line(_("Next review"), day(case.get("review_on")))
        line(_("Closed"), day(case.get("closed_on")))
        line(_("Support plan"), case.get("support_plan"))

    categories = document.get("care_categories") or []
    if categories:
        heading(_("Care categories"))
        for c in categories:
            ended = f" – {day(c.get('ended_on'))}" if c.get("ended_on") else ""
            line(label(c.get("category", "")), f"{day(c.get('since'))}{ended}")
            para(c.get("details"))

    if case is not None:
        for title, key, when, what in (
            (_("Pairings"), "pairings", "starts_on", "goals"),
            (_("Support"), "support_logs", "occurred_on", "notes"),
            (_("Guidance for teachers"), "guidance", "created_at", "text"),
        ):
            entries = case.get(key) or []
            if not entries:
                continue
            heading(title)
            for entry in entries:
                kind = entry.get("kind") or entry.get("mode") or ""
                line(day(entry.get(when)), label(kind) if kind else "")
                para(entry.get(what))
                pdf.ln(1)

    visits = document.get("home_visits") or []
    if visits:
        heading(_("Home visits"))
        for visit in visits:
            line(day(visit.get("visited_on")), label(visit.get("mode", "")))
            para(visit.get("notes"))
            pdf.ln(1)

    return bytes(pdf.output())
