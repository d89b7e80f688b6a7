"""Uploaded tables, read row by row as schools' tools export them (SPEC §6 imports).

Two formats, chosen by the request's content type:

- ``text/csv`` in UTF-8 (with or without a byte-order mark) or GB18030, which is what
  Excel "CSV" and Chinese survey tools (Wenjuanxing/问卷星, Tencent Forms) write. The
  encoding is settled by the first bytes outside ASCII: a BOM means UTF-8; otherwise the
  bytes from the first non-ASCII one on (up to :data:`SNIFF_BYTES`) are tried as UTF-8, and
  GB18030 is used when they are not. Everything before that byte is ASCII, which both
  encodings read alike, so no byte is ever read twice under different encodings.
- XLSX, the first worksheet, through openpyxl in read-only mode (cached formula values,
  never formulas). The archive is checked before openpyxl opens it, so a small upload that
  unpacks to gigabytes is refused.

The body is spooled to a temporary file while it arrives (:func:`spool`), in memory up to
:data:`SPOOL_IN_MEMORY_BYTES` and on disk beyond, and then read row by row: no whole table
is ever held. Rows come as lists of text cells; what a cell must hold is the importer's
business, and so is the text rule (``casemgr.validation``), since only it knows each
column's meaning. Row numbers count data rows from 1 (the header is row 0), blank rows
included, so that a number points at the same line in the user's spreadsheet.

Messages name the rule broken, never a cell's value.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import re
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import AsyncIterable, Generator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import IO, Any

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TABLE_TYPES = (CSV, XLSX)

SPOOL_IN_MEMORY_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
SNIFF_BYTES = 4096
# What an XLSX archive may unpack to: far more than any school's table needs.
MAX_XLSX_UNPACKED_BYTES = 512 * 1024 * 1024
MAX_XLSX_RATIO = 200
# Cells a worksheet may declare, in one row and in all. Parsing costs per declared cell,
# empty ones (``<c/>``) included, so a few kilobytes of them would cost seconds: they are
# counted in the raw XML, before openpyxl parses anything. Far above what a roster or a
# screening export holds (tens of columns, tens of thousands of rows).
MAX_XLSX_ROW_CELLS = 1024
MAX_XLSX_CELLS = 3_000_000
_XLSX_TAG = re.compile(rb"<(?:\w+:)?(row|c)[\s/>]")


class TableError(ValueError):
    """The upload cannot be read as a table from ``row`` on (0: the header, or the file)."""

    def __init__(self, message: str, row: int = 0) -> None:
        super().__init__(message)
        self.row = row


async def spool(chunks: AsyncIterable[bytes]) -> IO[bytes]:
    """Write an arriving body to a temporary file (memory first, then disk) and rewind it.

    The caller closes the file; the size limit is the web layer's (Litestar stops reading
    a body larger than the route's ``request_max_body_size``).
    """
    spooled = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
    try:
        async for chunk in chunks:
            spooled.write(chunk)
        spooled.seek(0)
    except BaseException:
        spooled.close()
        raise
    return spooled


def normalise_header(name: str) -> str:
    """Column names compare after NFKC (full-width letters), trimming and lower-casing."""
    return unicodedata.normalize("NFKC", name).strip().lower()


@dataclass
class Table:
    """A header and an iterator of ``(row_number, cells)``; cells are text, "" when empty."""

    header: list[str]
    rows: Generator[tuple[int, list[str]], None, None]

    def close(self) -> None:
        """Stop reading (the rows not read are never parsed)."""
        self.rows.close()

    def columns(self, required: list[str]) -> dict[str, int]:
        """Where each required column is (by normalised name); ``TableError`` when absent."""
        where: dict[str, int] = {}
        for index, name in enumerate(self.header):
            if name and name not in where:
                where[name] = index
        missing = [name for name in required if name not in where]
        if missing:
            raise TableError(f"the header lacks the column(s) {', '.join(missing)}")
        return where


def open_table(file: IO[bytes], media_type: str) -> Table:
    """Read a spooled upload of ``media_type`` (one of :data:`TABLE_TYPES`)."""
    if media_type == CSV:
        rows = _csv_rows(file)
    elif media_type == XLSX:
        rows = _xlsx_rows(file)
    else:
        raise TableError(f"the table must be {' or '.join(TABLE_TYPES)}")
    try:
        _, header = next(rows)
    except StopIteration:
        raise TableError("the file is empty: it needs a header row") from None
    return Table([normalise_header(cell) for cell in header], rows)


# -- CSV ------------------------------------------------------------------------------


def sniff_encoding(file: IO[bytes]) -> str:
    """``utf-8-sig`` or ``gb18030`` for a seekable file (see the module docstring); rewinds."""
    file.seek(0)
    head = file.read(len(codecs.BOM_UTF8))
    if head == codecs.BOM_UTF8:
        file.seek(0)
        return "utf-8-sig"
    sample = b""
    while True:
        chunk = head + file.read(READ_CHUNK_BYTES)
        head = b""
        if not chunk:
            break
        if sample:
            sample += chunk
        else:
            first = next((i for i, byte in enumerate(chunk) if byte >= 0x80), None)
            if first is not None:
                sample = chunk[first:]
        if len(sample) >= SNIFF_BYTES:
            break
    file.seek(0)
    if not sample:
        return "utf-8-sig"  # ASCII only: both read it alike
    try:
        # Incremental, so that a character cut by the end of the sample is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(sample[:SNIFF_BYTES], final=False)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8-sig"


def _csv_rows(file: IO[bytes]) -> Generator[tuple[int, list[str]], None, None]:
    encoding = sniff_encoding(file)
    text = io.TextIOWrapper(file, encoding=encoding, errors="strict", newline="")
    number = -1
    try:
        for record in csv.reader(text, strict=False):
            number += 1
            yield number, record
    except csv.Error as exc:
        raise TableError(f"not readable as CSV ({_csv_reason(exc)})", number + 1) from None
    except UnicodeDecodeError:
        raise TableError("the file is neither UTF-8 nor GB18030 text", number + 1) from None
    finally:
        # Leave the caller's file open (it closes it); a file closed already is fine too.
        with contextlib.suppress(ValueError):
            text.detach()


def _csv_reason(exc: csv.Error) -> str:
    return "a cell is too long" if "field larger" in str(exc) else "malformed quoting"


# -- XLSX -----------------------------------------------------------------------------


def _check_archive(file: IO[bytes]) -> None:
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise TableError("the file is not an XLSX workbook") from None
    unpacked = sum(member.file_size for member in members)
    packed = sum(member.compress_size for member in members) or 1
    if unpacked > MAX_XLSX_UNPACKED_BYTES or unpacked > MAX_XLSX_RATIO * max(packed, 64 * 1024):
        raise TableError("the workbook unpacks to far more data than a table holds")
    file.seek(0)
    with zipfile.ZipFile(file) as archive:
        for member in members:
            name = member.filename
            if name.startswith("xl/worksheets/") and name.endswith(".xml"):
                _count_cells(archive, member)
    file.seek(0)


def _count_cells(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    """Refuse a worksheet that declares more cells than a table holds (see above)."""
    total = in_row = rows = 0
    tail = b""
    try:
        with archive.open(member) as part:
            while chunk := part.read(READ_CHUNK_BYTES):
                data = tail + chunk
                # A tag cut by the chunk's end is counted with the next chunk.
                cut = data.rfind(b"<")
                if cut > len(data) - 16:
                    data, tail = data[:cut], data[cut:]
                else:
                    tail = b""
                for match in _XLSX_TAG.finditer(data):
                    if match.group(1) == b"row":
                        rows += 1
                        in_row = 0
                        continue
                    total += 1
                    in_row += 1
                    if in_row > MAX_XLSX_ROW_CELLS:
                        raise TableError(
                            f"a row has more than {MAX_XLSX_ROW_CELLS} cells", max(rows - 1, 0)
                        )
                if total > MAX_XLSX_CELLS:
                    raise TableError(f"the worksheet has more than {MAX_XLSX_CELLS} cells")
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, zlib.error):
        raise TableError("the workbook is damaged") from None


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _xlsx_rows(file: IO[bytes]) -> Generator[tuple[int, list[str]], None, None]:
    from openpyxl import load_workbook

    _check_archive(file)
    with warnings.catch_warnings():
        # openpyxl warns about styles and extensions it ignores; they do not matter here.
        warnings.simplefilter("ignore")
        try:
            workbook = load_workbook(file, read_only=True, data_only=True)
        except Exception:  # openpyxl raises many types for a damaged workbook
            raise TableError("the file is not a readable XLSX workbook") from None
        try:
            sheet = workbook.worksheets[0] if workbook.worksheets else None
            if sheet is None:
                return
            number = -1
            try:
                for values in sheet.iter_rows(values_only=True):
                    number += 1
                    yield number, [_cell_text(value) for value in values]
            except (zipfile.BadZipFile, KeyError, ValueError, OSError):
                raise TableError("the workbook is damaged", number + 1) from None
        finally:
            workbook.close()


def write_csv(rows: list[list[str]], encoding: str = "utf-8") -> bytes:
    """A CSV body (tests, the demo and benchmarks build uploads with it).

    Cells are written as they are: this builds *uploads*. Anything the service hands out
    as a table goes through :func:`export_csv`.
    """
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode(encoding)


# -- tables going out: formula injection ------------------------------------------------
#
# A spreadsheet runs a cell that starts with "=", "+", "-" or "@" as a formula (DDE
# payloads such as ``=cmd|' /C calc'!A0`` included), and some read a leading tab or
# carriage return past it. Every cell of a table the service emits is neutralised: a
# leading apostrophe makes the spreadsheet show the text as text. Names and notes are
# free text (a name may well start with "-"), so they are neutralised on the way out,
# not refused on the way in. Imports store cells as text as they are (module docstring).

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
SPREADSHEET_TYPES = frozenset({CSV, XLSX, "application/vnd.ms-excel", "text/tab-separated-values"})
"""Media types a spreadsheet opens: a route answering with one must use :func:`export_csv`."""


def neutralise_cell(value: str) -> str:
    """``value`` as a spreadsheet shows it as text: a formula trigger first gets a ``'``."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def export_csv(rows: list[list[str]]) -> bytes:
    """A CSV download: UTF-8 with a byte-order mark (so that Excel reads Chinese), CRLF,
    every cell neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([neutralise_cell(cell) for cell in row])
    return codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")


def unneutralised_cells(body: bytes, media_type: str) -> list[tuple[int, int]]:
    """The (row, column) of every cell of a table a spreadsheet would run as a formula.

    For checking answers (tests scan every response with it): a CSV or TSV cell starting
    with a trigger, an XLSX cell holding a formula or text starting with one; a body that
    cannot be read as a table counts as one bad cell at (0, 0).
    """
    found: list[tuple[int, int]] = []
    try:
        if media_type == XLSX:
            from openpyxl import load_workbook

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                workbook = load_workbook(io.BytesIO(body), read_only=True, data_only=False)
            try:
                for sheet in workbook.worksheets:
                    for r, values in enumerate(sheet.iter_rows(values_only=True)):
                        for c, value in enumerate(values):
                            if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
                                found.append((r, c))
            finally:
                workbook.close()
            return found
        file = io.BytesIO(body)
        text = io.TextIOWrapper(file, encoding=sniff_encoding(file), newline="")
        delimiter = "\t" if media_type == "text/tab-separated-values" else ","
        for r, record in enumerate(csv.reader(text, delimiter=delimiter, strict=True)):
            found.extend(
                (r, c) for c, cell in enumerate(record) if cell.startswith(FORMULA_TRIGGERS)
            )
    except Exception:  # unreadable as a table: a spreadsheet may still open it
        return [(0, 0)]
    return found


__all__ = [
    "CSV",
    "FORMULA_TRIGGERS",
    "SPREADSHEET_TYPES",
    "TABLE_TYPES",
    "XLSX",
    "Table",
    "TableError",
    "export_csv",
    "neutralise_cell",
    "normalise_header",
    "open_table",
    "sniff_encoding",
    "spool",
    "unneutralised_cells",
    "write_csv",
]
