"""Importing a round's results: a survey tool's export in, sealed scored results out.

``POST /api/v1/screening/rounds/{id}/results`` takes CSV (UTF-8 with or without BOM, or
GB18030) or XLSX, header ``student_no,administered_on,q1,...,qN`` (other columns, as
Wenjuanxing or Tencent Forms export them, are ignored; names compare after NFKC, so
``ｑ１`` is ``q1``). Either every row is stored or none is: any bad row answers 422
``{imported: 0, rejected: [{row, error}]}`` listing every bad row.

How 50,000 rows go in quickly and in little memory (SPEC §8):

1. The caller is authorized before the body is read, and the request's first transaction
   ends then, so a slow upload holds no database lock; the body is spooled to a temporary
   file (``casemgr.tabular``) and read back row by row.
2. The round row is locked (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
   serialises writers), so two imports of one round run one after the other and the
   second finds the first's results: its rows are duplicates.
3. Three queries load what every row is checked against: the students of the round's
   classes with their wrapped keys and blind indexes, the governing consent of each
   student, and the students who have a result in the round already.
4. Each row is parsed, checked by the text rule, scored by the instrument, matched to its
   student by blind index (confirmed by opening the student number), checked for granted
   consent; then the student's key is unwrapped (once: a student appears once in a good
   file) and the result sealed into a plain row. This runs off the event loop, a batch of
   :data:`BATCH_ROWS` rows at a time, and each batch is inserted with Core (on
   PostgreSQL while the next one is prepared). After the first bad row nothing more is
   sealed or stored, but every row is still checked, so the answer lists them all; the
   transaction is then rolled back.
5. Audit: one event per stored result (naming the student, appended at the end in
   slices, so the chain's head is locked briefly and the events are never all in memory)
   and one for the import with its counts; a refused import leaves one denial.

Messages name the column and the rule, never a cell's value.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, NoReturn, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.audit.services import Event, record_many
from casemgr.authz import Decision, Permission
from casemgr.context import RequestContext
from casemgr.crypto import FieldCipher
from casemgr.crypto.envelope import blind_index
from casemgr.crypto.models import DataKey
from casemgr.errors import Conflict, DomainError
from casemgr.screening.bulk import open_value, seal_values
from casemgr.screening.instruments import Catalogue, Instrument, ScoringError
from casemgr.screening.models import Consent, RoundClass, ScreeningResult, ScreeningRound
from casemgr.screening.services import GRANTED, expiry_of
from casemgr.students.identity import normalise_student_no
from casemgr.students.models import Student
from casemgr.tabular import Table as Upload
from casemgr.tabular import TableError, open_table
from casemgr.validation import text_problem

BATCH_ROWS = 1000
AUDIT_BATCH = 2000
STUDENT_NO = "student_no"
ADMINISTERED_ON = "administered_on"
NOT_IN_ROUND = "student_no: no student of this round's classes has this number"
_results = cast(Table, ScreeningResult.__table__)
# ASCII digits after NFKC (full-width digits fold to these); other scripts' digits are
# refused rather than read by int().
_WHOLE = re.compile(r"-?[0-9]{1,6}(?:\.0+)?")
# The common case of an answer cell, read without a regular expression.
_DIGIT = {str(n): n for n in range(10)}
# 2026-03-01, 2026/3/1, 2026.3.1, 2026年3月1日, optionally followed by a time of day.
_DATE = re.compile(
    r"([0-9]{4})[-/.年]([0-9]{1,2})[-/.月]([0-9]{1,2})日?"
    r"(?:[ T][0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?(?:\.[0-9]+)?)?"
)


class ImportRefused(DomainError):
    """422 with every bad row; nothing was stored."""

    status = 422
    title = "Invalid input"

    def __init__(self, rejected: list[dict[str, Any]]) -> None:
        super().__init__(
            f"{len(rejected)} row(s) refused; nothing was imported.",
            imported=0,
            rejected=rejected,
        )


@dataclass(slots=True)
class _Candidate:
    id: uuid.UUID
    data_key_id: uuid.UUID
    kek_version: int | None
    wrapped: bytes | None
    student_no: bytes


@dataclass
class ImportOutcome:
    imported: int
    rows: int
    rejected: list[dict[str, Any]] = field(default_factory=list)


def time_ordered_id() -> uuid.UUID:
    """A UUID (version 7 layout) that sorts by creation time: 48 bits of milliseconds, then
    74 random bits. Results of one import then go to the end of the primary-key index
    instead of all over it, which makes a large import's inserts cheaper. The time it shows
    is in clear already (``imported_at``)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62
    return uuid.UUID(int=value | (rand & (2**62 - 1)))


def _clean(cell: str) -> str:
    return cell.strip() if cell.isascii() else unicodedata.normalize("NFKC", cell).strip()


def parse_answer(cell: str) -> int | None:
    """An answer cell: empty is a missing answer; else a whole number (``ValueError``)."""
    text = _clean(cell)
    if not text:
        return None
    if not _WHOLE.fullmatch(text):
        raise ValueError("not a whole number")
    return int(text.split(".", 1)[0])


def parse_date(cell: str) -> date:
    match = _DATE.fullmatch(_clean(cell))
    if match is None:
        raise ValueError("not a date (2026-03-01)")
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise ValueError("not a possible date") from None


async def authorize_import(ctx: RequestContext, round_id: uuid.UUID) -> Decision:
    """Decide before the body is read; a refusal is audited and raised (403 / 404)."""
    screening_round = await ctx.session.get(ScreeningRound, round_id)
    return await ctx.require(
        Permission.SCREENING_RESULT_IMPORT,
        resource_type="screening_round",
        resource_id=round_id,
        school_id=screening_round.school_id if screening_round else None,
        exists=screening_round is not None,
    )


class _Importer:
    def __init__(
        self,
        ctx: RequestContext,
        screening_round: ScreeningRound,
        instrument: Instrument,
        columns: dict[str, int],
    ) -> None:
        self.ctx = ctx
        self.round = screening_round
        self.instrument = instrument
        self.student_col = columns[STUDENT_NO]
        self.date_col = columns[ADMINISTERED_ON]
        self.answer_cols = [columns[f"q{n}"] for n in range(1, instrument.items + 1)]
        # The columns a row is read from, by name: student_no, administered_on, q1...qN.
        self.used = [
            (STUDENT_NO, self.student_col),
            (ADMINISTERED_ON, self.date_col),
            *((f"q{n}", i) for n, i in enumerate(self.answer_cols, start=1)),
        ]
        # Dates already read and found good (a file holds a handful of distinct ones).
        self.dates: dict[str, date] = {}
        self.width = max([self.student_col, self.date_col, *self.answer_cols]) + 1
        self.today = clock.today()
        self.now = clock.now()
        self.scope = str(screening_round.school_id)
        # Every blind-index key version, current first (rows may still carry an older one
        # while ``keys rotate --blind-index`` runs).
        self.index_keys = [
            key for _, key in sorted(ctx.crypto.keyring.blind_index_keys.items(), reverse=True)
        ]
        self.expiry: dict[date, date] = {}
        self.by_index: dict[bytes, list[_Candidate]] = {}
        self.consents: dict[uuid.UUID, tuple[uuid.UUID, bytes]] = {}
        self.imported_before: set[uuid.UUID] = set()
        self.seen: dict[uuid.UUID, int] = {}
        self.batch: list[dict[str, Any]] = []
        # (result, student) of every row stored: one audit event each, at the end.
        self.stored: list[tuple[uuid.UUID, uuid.UUID]] = []
        self.rejected: list[dict[str, Any]] = []
        self.imported = 0
        self.rows = 0

    async def load(self, session: AsyncSession) -> None:
        ctx, school_id = self.ctx, self.round.school_id
        # Reach is decided per class (the round's classes the caller may import for), so
        # that no row needs a decision of its own.
        class_ids = [
            class_id
            for class_id in await session.scalars(
                select(RoundClass.class_id).where(RoundClass.round_id == self.round.id)
            )
            if ctx.decide(
                Permission.SCREENING_RESULT_IMPORT, school_id=school_id, class_id=class_id
            ).allowed
        ]
        students = await session.execute(
            select(
                Student.id,
                Student.data_key_id,
                Student.student_no,
                Student.student_no_bidx,
                DataKey.kek_version,
                DataKey.wrapped,
            )
            .join(DataKey, DataKey.id == Student.data_key_id)
            .where(
                Student.class_id.in_(class_ids),
                Student.enrolment == "enrolled",
                DataKey.wrapped.is_not(None),
            )
        )
        for s in students:
            self.by_index.setdefault(bytes(s.student_no_bidx), []).append(
                _Candidate(s.id, s.data_key_id, s.kek_version, s.wrapped, s.student_no)
            )
        # The governing decision of each student: the last one recorded.
        for student_id, consent_id, decision in await session.execute(
            select(Consent.student_id, Consent.id, Consent.decision)
            .where(Consent.round_id == self.round.id)
            .order_by(Consent.recorded_at, Consent.id)
        ):
            self.consents[student_id] = (consent_id, decision)
        self.imported_before = set(
            await session.scalars(
                select(ScreeningResult.student_id).where(ScreeningResult.round_id == self.round.id)
            )
        )

    def _problems(self, cells: list[str]) -> tuple[list[str], str, date | None, list[int | None]]:
        problems: list[str] = []
        used = [cells[index] for _, index in self.used]
        # The text rule, cell by cell only when the row as a whole fails its fast check.
        if not "".join(used).isprintable():
            for (name, _), cell in zip(self.used, used, strict=True):
                problem = text_problem(cell)
                if problem is not None:
                    problems.append(f"{name}: {problem}")
            if problems:
                return problems, "", None, []
        student_no = normalise_student_no(used[0])
        if not student_no:
            problems.append("student_no: missing")
        administered_on = self.dates.get(used[1])
        if administered_on is None:
            try:
                administered_on = parse_date(used[1])
            except ValueError as exc:
                problems.append(f"administered_on: {exc}")
            else:
                if administered_on > self.today:
                    problems.append("administered_on: must not be in the future")
                    administered_on = None
                elif not self.round.opens_on <= administered_on <= self.round.closes_on:
                    problems.append("administered_on: outside the round's window")
                    administered_on = None
                else:
                    self.dates[used[1]] = administered_on
        answers: list[int | None] = []
        for n, cell in enumerate(used[2:], start=1):
            quick = _DIGIT.get(cell)
            if quick is not None:
                answers.append(quick)
                continue
            try:
                answers.append(parse_answer(cell))
            except ValueError as exc:
                problems.append(f"q{n}: {exc}")
        return problems, student_no, administered_on, answers

    def _student(self, student_no: str) -> tuple[_Candidate, FieldCipher] | None:
        """The round's student with this number, with the student's cipher, or None."""
        for key in self.index_keys:
            index = blind_index(key, STUDENT_NO, student_no, self.scope)
            for candidate in self.by_index.get(index, ()):
                cipher = self.ctx.crypto.open_data_key(
                    candidate.data_key_id, candidate.kek_version, candidate.wrapped
                )
                # Blind indexes are truncated: confirm by opening the number itself.
                if (
                    open_value(cipher, Student, STUDENT_NO, candidate.id, candidate.student_no)
                    == student_no
                ):
                    return candidate, cipher
        return None

    def row(self, number: int, cells: list[str]) -> None:
        if not any(cell.strip() for cell in cells):
            return  # a blank line (counted, so numbers match the user's spreadsheet)
        self.rows += 1
        if len(cells) < self.width:
            cells = cells + [""] * (self.width - len(cells))
        problems, student_no, administered_on, answers = self._problems(cells)
        scored = None
        if not problems:
            try:
                scored = self.instrument.score(answers)
            except ScoringError as exc:
                problems.append(str(exc))
        found = self._student(student_no) if student_no else None
        if student_no and found is None:
            problems.append(NOT_IN_ROUND)
        cipher = None
        if found is not None:
            candidate, cipher = found
            first = self.seen.get(candidate.id)
            if first is not None:
                problems.append(f"the student appears more than once in the file (row {first})")
            else:
                self.seen[candidate.id] = number
            if candidate.id in self.imported_before:
                problems.append("a result of this student is already imported for this round")
            consent = self.consents.get(candidate.id)
            decision = (
                None
                if consent is None
                else open_value(cipher, Consent, "decision", consent[0], consent[1])
            )
            if decision != GRANTED:
                problems.append("consent: not granted for this round")
        if problems:
            self.rejected.append({"row": number, "error": "; ".join(problems)})
            self.batch.clear()
            return
        if self.rejected:
            return  # nothing will be stored: check the rest, seal nothing
        assert found is not None and scored is not None and administered_on is not None
        candidate, cipher = found
        result_id = time_ordered_id()
        values = seal_values(
            cipher,
            ScreeningResult,
            result_id,
            {
                "administered_on": administered_on,
                "answers": scored.answers,
                "total": scored.total,
                "scales": scored.scales,
                "band": scored.band,
                "flags": scored.flags,
                "status": scored.status,
                "review": None,
            },
        )
        self.stored.append((result_id, candidate.id))
        self.batch.append(
            {
                "id": result_id,
                "round_id": self.round.id,
                "student_id": candidate.id,
                "imported_by": self.ctx.principal.user_id,
                "imported_at": self.now,
                "expires_on": self._expiry(administered_on),
                **values,
            }
        )

    def _expiry(self, administered_on: date) -> date:
        expires_on = self.expiry.get(administered_on)
        if expires_on is None:
            expires_on = self.expiry[administered_on] = expiry_of(administered_on)
        return expires_on

    def consume(
        self, rows: Iterator[tuple[int, list[str]]], limit: int
    ) -> tuple[bool, list[dict[str, Any]]]:
        """Check (and seal) up to ``limit`` rows: ``(more to come, sealed rows)``."""
        self.batch = []
        more = True
        try:
            for _ in range(limit):
                number, cells = next(rows)
                self.row(number, cells)
        except StopIteration:
            more = False
        except TableError as exc:
            self.rejected.append({"row": exc.row, "error": str(exc)})
            more = False
        return more, [] if self.rejected else self.batch

    async def store(self, session: AsyncSession, batch: list[dict[str, Any]]) -> None:
        if batch and not self.rejected:
            await session.execute(insert(_results), batch)
            self.imported += len(batch)


async def import_results(
    ctx: RequestContext,
    round_id: uuid.UUID,
    file: IO[bytes],
    media_type: str,
    catalogue: Catalogue,
    decision: Decision,
) -> ImportOutcome:
    """Import a spooled upload into round ``round_id`` (authorized: ``authorize_import``)."""
    session = ctx.session
    screening_round = await session.scalar(
        select(ScreeningRound)
        .where(ScreeningRound.id == round_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert screening_round is not None  # rounds are never deleted
    instrument = catalogue.get(screening_round.instrument)
    if instrument is None:
        raise Conflict("The round's instrument is no longer defined; results cannot be scored.")
    try:
        upload: Upload = await asyncio.to_thread(open_table, file, media_type)
    except TableError as exc:
        await _refused(ctx, decision, screening_round, 0, [{"row": exc.row, "error": str(exc)}])
    try:
        try:
            columns = upload.columns(
                [STUDENT_NO, ADMINISTERED_ON, *(f"q{n}" for n in range(1, instrument.items + 1))]
            )
        except TableError as exc:
            await _refused(ctx, decision, screening_round, 0, [{"row": 0, "error": str(exc)}])
        importer = _Importer(ctx, screening_round, instrument, columns)
        await importer.load(session)
        # Parsing, scoring and sealing run off the event loop, a batch at a time, so that
        # other requests of this process are served while a large file goes in. With a
        # database server the next batch is prepared while the server stores the last;
        # SQLite stores in this process, whose threads would only contend for the
        # interpreter lock (measured slower), so there one step follows the other.
        overlap = session.get_bind().dialect.name != "sqlite"
        more, batch = await asyncio.to_thread(importer.consume, upload.rows, BATCH_ROWS)
        while more:
            if overlap:
                (more, following), _ = await asyncio.gather(
                    asyncio.to_thread(importer.consume, upload.rows, BATCH_ROWS),
                    importer.store(session, batch),
                )
            else:
                await importer.store(session, batch)
                more, following = await asyncio.to_thread(importer.consume, upload.rows, BATCH_ROWS)
            batch = following
        await importer.store(session, batch)
    finally:
        upload.close()
    if importer.rejected:
        await _refused(ctx, decision, screening_round, importer.rows, importer.rejected)
    # One event per result, naming its student (so that a student's trail shows the
    # import), appended last so that the chain's head stays locked for as short a time as
    # can be, and in slices so that the events are never all in memory at once.
    school_id = screening_round.school_id
    actor = ctx.actor(decision, school_id)
    for start in range(0, len(importer.stored), AUDIT_BATCH):
        await record_many(
            session,
            [
                Event(
                    audit.Action.SCREENING_RESULT_IMPORT,
                    resource_type="screening_result",
                    resource_id=result_id,
                    student_id=student_id,
                    school_id=school_id,
                )
                for result_id, student_id in importer.stored[start : start + AUDIT_BATCH]
            ],
            actor=actor,
        )
    await ctx.audit(
        audit.Action.SCREENING_RESULT_IMPORT,
        resource_type="screening_round",
        resource_id=round_id,
        decision=decision,
        school_id=school_id,
        detail={"rows": importer.rows, "imported": importer.imported},
    )
    return ImportOutcome(imported=importer.imported, rows=importer.rows)


async def _refused(
    ctx: RequestContext,
    decision: Decision,
    screening_round: ScreeningRound,
    rows: int,
    rejected: list[dict[str, Any]],
) -> NoReturn:
    """Roll back whatever was inserted, leave the refusal in the trail, answer 422."""
    await audit.record_denial(
        ctx.session,
        audit.Action.SCREENING_RESULT_IMPORT,
        actor=ctx.actor(decision, screening_round.school_id),
        resource_type="screening_round",
        resource_id=screening_round.id,
        school_id=screening_round.school_id,
        detail={"status": 422, "rows": rows, "rejected": len(rejected)},
    )
    raise ImportRefused(rejected)
