"""Request and answer bodies of the screening routes (SPEC §6)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Outcome = Literal["no_concern", "monitor", "support", "refer", "urgent"]
Decision = Literal["granted", "declined", "withdrawn"]
Prose = Annotated[str, Meta(min_length=1, max_length=4000)]


class RoundIn(msgspec.Struct, forbid_unknown_fields=True):
    school_id: uuid.UUID
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    instrument: Annotated[str, Meta(min_length=1, max_length=64)]
    school_year: Annotated[str, Meta(min_length=9, max_length=9)]
    class_ids: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=200)]
    opens_on: date
    closes_on: date


class ConsentIn(msgspec.Struct, forbid_unknown_fields=True):
    student_id: uuid.UUID
    decision: Decision
    guardian_name: Annotated[str, Meta(min_length=1, max_length=100)]
    recorded_on: date


class ReviewIn(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Outcome
    notes: Prose
    guidance_for_teachers: Prose | None = None
    recheck_on: date | None = None


class CounselingNoteIn(msgspec.Struct, forbid_unknown_fields=True):
    notes: Annotated[str, Meta(min_length=1, max_length=8000)]
    result_id: uuid.UUID | None = None


class Created(msgspec.Struct):
    id: uuid.UUID


class RoundOut(msgspec.Struct):
    id: uuid.UUID
    school_id: uuid.UUID
    name: str
    school_year: str
    class_ids: list[uuid.UUID]
    opens_on: date
    closes_on: date
    # Shown to those who run rounds (counselors, leaders); a class teacher recording
    # consent sees the round, not which questionnaire it uses.
    instrument: str | None = None


class Rounds(msgspec.Struct):
    items: list[RoundOut]


class ImportOut(msgspec.Struct):
    imported: int
    rejected: list[dict[str, object]]


class QueueItem(msgspec.Struct):
    result_id: uuid.UUID
    student_id: uuid.UUID
    round_id: uuid.UUID
    instrument: str
    band: str
    total: int | None
    flags: list[str]
    status: str
    administered_on: date


class Queue(msgspec.Struct):
    items: list[QueueItem]


class ReviewOut(msgspec.Struct):
    outcome: str
    notes: str
    reviewed_by: uuid.UUID
    reviewed_at: datetime
    guidance_for_teachers: str | None
    recheck_on: date | None
    case_id: uuid.UUID | None


class ResultOut(msgspec.Struct):
    id: uuid.UUID
    student_id: uuid.UUID
    round_id: uuid.UUID
    instrument: str
    administered_on: date
    expires_on: date
    answers: list[int | None]
    total: int | None
    band: str
    scales: dict[str, int | None]
    scale_bands: dict[str, str | None]
    flags: list[str]
    status: str
    review: ReviewOut | None


class Reviewed(msgspec.Struct, omit_defaults=True):
    result_id: uuid.UUID
    status: str
    # Present when the review opened the student's case file or linked it (SPEC §6).
    case_id: uuid.UUID | None = None


class CounselingNoteOut(msgspec.Struct):
    id: uuid.UUID
    student_id: uuid.UUID
    author_id: uuid.UUID | None
    school_year: str
    created_at: datetime
    notes: str
    result_id: uuid.UUID | None


class CounselingNotes(msgspec.Struct):
    items: list[CounselingNoteOut]
    school_year: str


class ProgressRow(msgspec.Struct):
    """Counts of one class (or the round's total); ``None`` where suppressed."""

    consents_recorded: int | None
    consents_granted: int | None
    results_in: int | None
    pending_review: int | None
    suppressed: list[str]
    class_id: uuid.UUID | None = None
    class_name: str | None = None


class Progress(msgspec.Struct):
    round_id: uuid.UUID
    # The smallest count shown to school leaders; None when nothing is suppressed
    # (counselors see every count).
    k: int | None
    classes: list[ProgressRow]
    total: ProgressRow


class Instruments(msgspec.Struct):
    items: list[dict[str, object]]
