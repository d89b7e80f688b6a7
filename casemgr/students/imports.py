"""The roster import: a school's student list as its information system or Excel exports it.

The file is CSV (UTF-8 with or without a BOM, or GB18030) or XLSX, read row by row by
``casemgr.tabular``. The first row is the header (:data:`COLUMNS`; any order, unknown
columns ignored, the last five optional). Every data row passes the text rule
(``casemgr.validation``) and the rules of ``POST /api/v1/students``
(``casemgr.students.services.validate``); then numbers that repeat within the file, and
students registered already (the student number in this school, the national ID
anywhere), are bad rows too: nothing is ever overwritten. One bad row refuses the whole
file, naming each bad row and field but never a value, and nothing is stored. A good file
creates every student in one transaction, with one ``student:create`` audit event per
student (appended after the students, in batches) and one ``student:import`` event for the
file (counts only).

Cells are stored as text: a cell such as ``=cmd|' /C calc'!A0`` is a name like any other
here, and any later export to a spreadsheet must neutralise it.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any

import msgspec
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.audit.services import Event, record_many
from casemgr.crypto import Crypto
from casemgr.db import new_id
from casemgr.errors import DomainError, InvalidInput
from casemgr.schools.models import School, SchoolClass
from casemgr.schoolyear import current_school_year
from casemgr.students.models import Student
from casemgr.students.schemas import StudentIn
from casemgr.students.services import (
    TRANSFERS_ROUTE,
    StudentFields,
    new_student_code,
    seal_student,
    validate,
)
from casemgr.tabular import CSV, TABLE_TYPES, XLSX, Table, TableError, open_table
from casemgr.validation import text_problem

MEDIA_TYPES = TABLE_TYPES
MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_ROWS = 20_000
BATCH = 500  # students flushed and audited together
MAX_REJECTED = 200  # rows named in one answer; the count says how many more there were

REQUIRED = ("class_name", "student_no", "full_name", "gender", "birth_date")
OPTIONAL = ("national_id", "address", "guardian_name", "guardian_relation", "guardian_phone")
COLUMNS = REQUIRED + OPTIONAL
GUARDIAN_COLUMNS = {
    "name": "guardian_name",
    "relation": "guardian_relation",
    "phone": "guardian_phone",
}
GENDERS = {"female": "female", "male": "male", "女": "female", "男": "male"}
_DATE = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[ T]0{1,2}:00(?::00)?)?$"
)
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$\.(?P<path>[^`]+)`)?$")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")
# How Excel writes a long number into CSV (1.10105E+17): its last digits are gone.
_SCIENTIFIC = re.compile(r"^\d+(?:\.\d+)?[eE][+-]?\d+$")

Progress = Callable[[int, int], None]


class RosterRejected(DomainError):
    """The file as a whole, refused: ``rejected`` names each bad row (never a value)."""

    status = 422
    title = "Invalid input"

    def __init__(
        self,
        rejected: list[dict[str, object]],
        total_bad: int | None = None,
        *,
        registered: int = 0,
    ) -> None:
        total = total_bad if total_bad is not None else len(rejected)
        super().__init__(
            f"{total} row(s) of the file are not acceptable; nothing was imported.",
            created=0,
            rejected=rejected[:MAX_REJECTED],
        )
        # Rows naming a student registered already (a number of this school, or a national
        # ID anywhere): each one is a refusal of its own in the trail (``record_refusal``).
        self.registered = registered
        if total > MAX_REJECTED:
            self.extra["rejected_total"] = total


def file_error(message: str) -> RosterRejected:
    return RosterRejected([{"row": 0, "error": message}])


# -- reading the file (``casemgr.tabular``) ------------------------------------------------


def sniff(head: bytes) -> str:
    """The media type of a file given without one (the command line): XLSX is a ZIP."""
    return XLSX if head.startswith(b"PK\x03\x04") else CSV


def open_roster(file: IO[bytes], media_type: str) -> Table:
    try:
        return open_table(file, media_type)
    except TableError as exc:
        raise RosterRejected([{"row": exc.row, "error": f"file: {exc}"}]) from None


# -- one row -------------------------------------------------------------------------------


def parse_date(value: str) -> date | None:
    match = _DATE.match(value.strip())
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def header_columns(header: list[str]) -> dict[str, int]:
    """Where each known column is; unknown ones are ignored (names arrive normalised)."""
    positions: dict[str, int] = {}
    problems = []
    for index, name in enumerate(header):
        name = name.lstrip("\ufeff")
        if name not in COLUMNS:
            continue
        if name in positions:
            problems.append(f"header: column {name} appears twice")
        positions[name] = index
    missing = [name for name in REQUIRED if name not in positions]
    if missing:
        problems.append(f"header: missing column(s) {', '.join(missing)}")
    if problems:
        raise RosterRejected([{"row": 0, "error": "; ".join(problems)}])
    return positions


def _field_column(path: str) -> str:
    """``guardians[0].phone`` -> ``guardian_phone``; other fields keep their names."""
    if path.startswith("guardians"):
        return GUARDIAN_COLUMNS.get(path.rsplit(".", 1)[-1], "guardian_name")
    return path


@dataclass
class ParsedRow:
    row: int
    fields: StudentFields
    school_class: SchoolClass


@dataclass
class RowReader:
    """Turns the cells of one row into a student's fields, or into an error message."""

    positions: dict[str, int]
    classes: dict[str, SchoolClass]
    school_year: str
    today: date

    def parse(self, row: int, values: list[str]) -> ParsedRow | str:
        texts = {
            name: values[index].strip() if index < len(values) else ""
            for name, index in self.positions.items()
        }
        errors = []
        for name, value in texts.items():
            if problem := text_problem(value):
                errors.append(f"{name}: {problem}")
        if errors:
            return "; ".join(errors)
        class_name = unicodedata.normalize("NFKC", texts["class_name"])
        school_class = self.classes.get(class_name)
        if not class_name:
            errors.append("class_name: must not be blank")
        elif school_class is None:
            errors.append(f"class_name: no class of that name in school year {self.school_year}")
        gender = GENDERS.get(texts["gender"].lower())
        if gender is None:
            errors.append("gender: female, male, 女 or 男")
        birth_date = parse_date(texts["birth_date"])
        if birth_date is None:
            errors.append("birth_date: a date such as 2013-05-06 (2013-5-6, 2013/05/06 also work)")
        if _SCIENTIFIC.match(texts.get("national_id", "")):
            errors.append("national_id: written as a number, which loses digits; format it as text")
        guardian = {key: texts.get(column, "") for key, column in GUARDIAN_COLUMNS.items()}
        if any(guardian.values()) and not all(guardian.values()):
            blank = [GUARDIAN_COLUMNS[k] for k, v in guardian.items() if not v]
            errors.append(f"{', '.join(blank)}: must not be blank when a guardian is given")
        if errors:
            return "; ".join(errors)
        assert school_class is not None and gender is not None and birth_date is not None
        candidate = {
            "class_id": school_class.id,
            "full_name": texts["full_name"],
            "gender": gender,
            "birth_date": birth_date,
            "student_no": texts["student_no"],
            "national_id": texts.get("national_id") or None,
            "address": texts.get("address") or None,
            "guardians": [guardian] if any(guardian.values()) else None,
        }
        try:
            data = msgspec.convert(candidate, StudentIn)
        except msgspec.ValidationError as exc:
            match = _MSGSPEC_PATH.match(str(exc))
            assert match is not None  # the pattern matches any text
            column = _field_column(match["path"] or "row")
            return f"{column}: {_QUOTED.sub('value', match['message'])}"
        try:
            fields = validate(data, self.today)
        except InvalidInput as exc:
            return "; ".join(
                f"{_field_column(e['field'])}: {e['message']}" for e in exc.extra["errors"]
            )
        return ParsedRow(row, fields, school_class)


# -- the whole file ------------------------------------------------------------------------


@dataclass
class ImportResult:
    created: int
    rejected: list[dict[str, object]] = field(default_factory=list)


NATIONAL_ID_TAKEN = (
    "national_id: registered already; if the student is joining from another school, the"
    f" school leader asks for a transfer ({TRANSFERS_ROUTE})"
)
STUDENT_NO_TAKEN = "student_no: a student with this number is registered in this school already"


def _chunks(items: list[bytes], size: int = 500) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _registered(
    session: AsyncSession, crypto: Crypto, school_id: uuid.UUID, rows: list[ParsedRow]
) -> dict[int, str]:
    """Rows whose student number (this school) or national ID (anywhere) is taken.

    Blind indexes find candidates in a few queries; each hit is confirmed by decrypting,
    as ``confirm_unique`` does. The values opened here never leave this function.
    """
    by_no: dict[bytes, list[ParsedRow]] = {}
    by_id: dict[bytes, list[ParsedRow]] = {}
    for parsed in rows:
        for index in crypto.blind_indexes("student_no", parsed.fields.student_no, str(school_id)):
            by_no.setdefault(index, []).append(parsed)
        if parsed.fields.national_id is not None:
            for index in crypto.blind_indexes("national_id", parsed.fields.national_id):
                by_id.setdefault(index, []).append(parsed)
    candidates: dict[uuid.UUID, Student] = {}
    for chunk in _chunks(list(by_no)):
        for student in await session.scalars(
            select(Student).where(
                Student.school_id == school_id, Student.student_no_bidx.in_(chunk)
            )
        ):
            candidates[student.id] = student
    for chunk in _chunks(list(by_id)):
        for student in await session.scalars(
            select(Student).where(Student.national_id_bidx.in_(chunk))
        ):
            candidates[student.id] = student
    ciphers = await crypto.ciphers(session, [s.data_key_id for s in candidates.values()])
    taken: dict[int, list[str]] = {}
    for student in candidates.values():
        cipher = ciphers.get(student.data_key_id)
        if cipher is None:  # erased: its numbers are free again
            continue
        if student.school_id == school_id:
            number = cipher.open_field(student, "student_no")
            for parsed in by_no.get(student.student_no_bidx, []):
                if parsed.fields.student_no == number:
                    taken.setdefault(parsed.row, []).append(STUDENT_NO_TAKEN)
        if student.national_id_bidx in by_id:
            national_id = cipher.open_field(student, "national_id")
            for parsed in by_id[student.national_id_bidx]:
                if parsed.fields.national_id == national_id:
                    taken.setdefault(parsed.row, []).append(NATIONAL_ID_TAKEN)
    return {row: "; ".join(dict.fromkeys(messages)) for row, messages in taken.items()}


def _repeated(rows: list[ParsedRow]) -> dict[int, str]:
    """Rows repeating a student number or national ID of an earlier row of the file."""
    first_no: dict[str, int] = {}
    first_id: dict[str, int] = {}
    errors: dict[int, list[str]] = {}
    for parsed in rows:
        number = parsed.fields.student_no
        if number in first_no:
            errors.setdefault(parsed.row, []).append(
                f"student_no: the same as row {first_no[number]}"
            )
        else:
            first_no[number] = parsed.row
        national_id = parsed.fields.national_id
        if national_id is not None:
            if national_id in first_id:
                errors.setdefault(parsed.row, []).append(
                    f"national_id: the same as row {first_id[national_id]}"
                )
            else:
                first_id[national_id] = parsed.row
    return {row: "; ".join(messages) for row, messages in errors.items()}


async def _lock_registrations(
    session: AsyncSession, crypto: Crypto, school_id: uuid.UUID, rows: list[ParsedRow]
) -> None:
    """Serialise registrations that could collide with this import.

    The school's row is locked, so two imports into one school run one after the other
    (the second then finds the first's students). On PostgreSQL, a transaction-scoped
    advisory lock per national ID also orders imports into different schools that name
    the same child. SQLite takes its write lock at BEGIN and needs neither.
    """
    if session.bind is None or session.bind.dialect.name != "postgresql":
        return
    await session.execute(select(School.id).where(School.id == school_id).with_for_update())
    keys = sorted(
        {
            int.from_bytes(
                crypto.blind_index("national_id", p.fields.national_id)[:8], "big", signed=True
            )
            for p in rows
            if p.fields.national_id is not None
        }
    )
    if keys:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
            {"keys": keys},
        )


def _new_student(session: AsyncSession, crypto: Crypto, item: ParsedRow) -> Student:
    """``insert_student`` without its per-row checks and flush: the whole file was checked
    against the registry under a lock above, and the batch is flushed at once."""
    cipher = crypto.new_data_key(session, "student")
    student = Student(
        id=new_id(),
        school_id=item.school_class.school_id,
        class_id=item.school_class.id,
        code=new_student_code(),
        data_key_id=cipher.key_id,
    )
    seal_student(crypto, cipher, student, item.fields, list(item.fields.sealed_values()))
    session.add(student)
    return student


def _read_rows(table: Table, reader: RowReader) -> tuple[list[ParsedRow], dict[int, str]]:
    parsed: list[ParsedRow] = []
    bad: dict[int, str] = {}
    try:
        for row, values in table.rows:
            if row > MAX_ROWS:
                raise file_error(f"file: at most {MAX_ROWS} data rows in one import")
            if not any(v.strip() for v in values):
                continue  # blank lines (trailing ones, above all) are not students
            outcome = reader.parse(row, values)
            if isinstance(outcome, str):
                bad[row] = outcome
            else:
                parsed.append(outcome)
    except TableError as exc:
        raise RosterRejected([{"row": exc.row, "error": f"file: {exc}"}]) from None
    return parsed, bad


async def import_roster(
    session: AsyncSession,
    crypto: Crypto,
    school_id: uuid.UUID,
    table: Table,
    *,
    actor: audit.Actor | None,
    progress: Progress | None = None,
) -> ImportResult:
    """Validate every row of ``table`` (header first), then create every student or none.

    Raises ``RosterRejected`` (422) naming the bad rows; the caller's transaction must then
    be rolled back (nothing was written before the last check passed).
    """
    school = await session.get(School, school_id)
    if school is None:
        raise InvalidInput.field("school_id", "no such school")
    year = await current_school_year(session, school_id)
    classes = {
        unicodedata.normalize("NFKC", c.name): c
        for c in await session.scalars(
            select(SchoolClass).where(
                SchoolClass.school_id == school_id, SchoolClass.school_year == year
            )
        )
    }
    try:
        # Parsing (openpyxl above all) is CPU work: off the event loop, so that a large or
        # hostile upload slows its own request only.
        parsed, bad = await asyncio.to_thread(
            _read_rows,
            table,
            RowReader(header_columns(table.header), classes, year, clock.today()),
        )
    finally:
        # A table refused early is not read to its end: let its reader go now, while the
        # upload it reads is still open.
        close = getattr(table.rows, "close", None)
        if close is not None:
            close()
    if not parsed and not bad:
        raise file_error("file: has no data rows")
    for number, message in _repeated(parsed).items():
        bad[number] = f"{bad[number]}; {message}" if number in bad else message
    await _lock_registrations(session, crypto, school_id, parsed)
    registered = await _registered(session, crypto, school_id, parsed)
    for number, message in registered.items():
        bad[number] = f"{bad[number]}; {message}" if number in bad else message
    if bad:
        rejected: list[dict[str, object]] = [
            {"row": number, "error": bad[number]} for number in sorted(bad)
        ]
        raise RosterRejected(rejected, registered=len(registered))
    total = len(parsed)
    created = 0
    events: list[Event] = []
    for start in range(0, total, BATCH):
        batch = parsed[start : start + BATCH]
        students = [_new_student(session, crypto, item) for item in batch]
        await session.flush()
        events.extend(
            Event(
                audit.Action.STUDENT_CREATE,
                resource_type="student",
                resource_id=student.id,
                student_id=student.id,
                school_id=school_id,
            )
            for student in students
        )
        created += len(batch)
        if progress is not None:
            progress(created, total)
    # Appended last: the chain's head, which every audited request of every process needs,
    # stays locked for the append only, not for the whole import (on PostgreSQL, requests
    # waited for the rest of a large import from its first batch on).
    for start in range(0, len(events), BATCH):
        await record_many(session, events[start : start + BATCH], actor=actor)
    await audit.record(
        session,
        audit.Action.STUDENT_IMPORT,
        actor=actor,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        detail={"created": total},
    )
    return ImportResult(created=total)


async def record_refusal(
    session: AsyncSession, refused: RosterRejected, *, actor: audit.Actor, school_id: uuid.UUID
) -> None:
    """Leave a refused import in the trail, in its own transaction: the file (counts only),
    and each row naming a registered student as the refusal ``POST /api/v1/students`` leaves
    for one. A file is no quiet way to ask the county about thousands of national IDs:
    every such row is a refusal the auditors' unusual-access list counts."""
    denials: list[tuple[str, dict[str, Any]]] = [
        (
            audit.Action.STUDENT_IMPORT,
            {
                "actor": actor,
                "resource_type": "school",
                "resource_id": school_id,
                "school_id": school_id,
                "detail": {"status": 422, "rejected": len(refused.extra["rejected"])},
            },
        )
    ]
    denials += [
        (
            audit.Action.STUDENT_CREATE,
            {
                "actor": actor,
                "resource_type": "student",
                "school_id": school_id,
                "detail": {"status": 409, "reason": "duplicate"},
            },
        )
    ] * refused.registered
    await audit.record_denials(session, denials)
