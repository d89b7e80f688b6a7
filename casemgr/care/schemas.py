"""Request and response bodies of the care programme (SPEC §6).

Closed sets are ``Literal``s, so a value outside them is a 422 naming the field before any
handler runs; text lengths are bounded here, blank text is refused by the services.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Category = Literal["orphan", "single_parent", "disability", "financial_hardship", "left_behind"]
PairingMode = Literal["one_to_one", "many_to_one"]
SupportKind = Literal[
    "conversation", "academic", "material", "psychological", "family_contact", "other"
]
VisitMode = Literal["in_person", "phone", "video"]
# Why a student's record is erased: a controlled vocabulary, so that the reason can be
# kept in the audit trail, which never holds free text.
ErasureReason = Literal["guardian_request", "enrolled_in_error", "retention_expired"]

Reason = Annotated[str, Meta(max_length=2000)]
Notes = Annotated[str, Meta(max_length=8000)]
Goals = Annotated[str, Meta(max_length=4000)]
StaffIds = Annotated[list[uuid.UUID], Meta(max_length=12)]


class CategoryIn(msgspec.Struct, forbid_unknown_fields=True):
    category: Category
    since: date
    details: Reason
    review_on: date | None = None


class CategoryEndIn(msgspec.Struct, forbid_unknown_fields=True):
    ended_on: date
    reason: Reason


class CaseIn(msgspec.Struct, forbid_unknown_fields=True):
    student_id: uuid.UUID
    reason: Reason


class CasePatch(msgspec.Struct, forbid_unknown_fields=True):
    """Fields to change; omitted ones stay. ``support_plan: null`` clears the plan."""

    support_plan: Notes | msgspec.UnsetType | None = msgspec.UNSET
    review_on: date | msgspec.UnsetType = msgspec.UNSET


class CaseCloseIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class PairingIn(msgspec.Struct, forbid_unknown_fields=True):
    mode: PairingMode
    mentor_ids: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=12)]
    goals: Goals
    starts_on: date
    # Required for ``many_to_one``; for ``one_to_one`` it may be left out (the mentor).
    lead_id: uuid.UUID | None = None


class PairingEndIn(msgspec.Struct, forbid_unknown_fields=True):
    ended_on: date
    reason: Reason


class SupportLogIn(msgspec.Struct, forbid_unknown_fields=True):
    occurred_on: date
    kind: SupportKind
    notes: Notes
    follow_up_on: date | None = None


class HomeVisitIn(msgspec.Struct, forbid_unknown_fields=True):
    visited_on: date
    participant_ids: StaffIds
    mode: VisitMode
    notes: Notes


class GuidanceIn(msgspec.Struct, forbid_unknown_fields=True):
    text: Notes


class VisitRequirementIn(msgspec.Struct, forbid_unknown_fields=True):
    class_teacher_visits: Annotated[int, Meta(ge=0, le=12)]
    mentor_visits: Annotated[int, Meta(ge=0, le=12)]
    # Default: the school's current school year.
    school_year: Annotated[str, Meta(pattern=r"^\d{4}-\d{4}$")] | None = None


class EmergencyAccessIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class EmergencyReviewIn(msgspec.Struct, forbid_unknown_fields=True):
    note: Reason | None = None


class EraseIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: ErasureReason


# -- answers --------------------------------------------------------------------------


class Created(msgspec.Struct):
    id: uuid.UUID


class CreatedCategory(msgspec.Struct):
    id: uuid.UUID
    case_id: uuid.UUID


class CreatedCase(msgspec.Struct):
    id: uuid.UUID
    code: str


class CategoryOut(msgspec.Struct):
    id: uuid.UUID
    category: str
    since: date
    ended_on: date | None
    review_on: date | None
    details: str | None
    end_reason: str | None
    # When the category was recorded here (``since`` is when the situation began).
    recorded_on: date


class PairingOut(msgspec.Struct):
    id: uuid.UUID
    case_id: uuid.UUID
    student_id: uuid.UUID
    mode: str
    mentor_ids: list[uuid.UUID]
    lead_id: uuid.UUID | None
    goals: str
    starts_on: date
    ends_on: date | None
    end_reason: str | None
    ended: bool


class StaffOut(msgspec.Struct):
    """A colleague who may be chosen (a mentor of a pairing): the name colleagues know."""

    id: uuid.UUID
    username: str
    display_name: str


class SupportLogOut(msgspec.Struct):
    id: uuid.UUID
    case_id: uuid.UUID
    occurred_on: date
    kind: str
    notes: str
    follow_up_on: date | None
    author_id: uuid.UUID | None
    school_year: str


class HomeVisitOut(msgspec.Struct):
    id: uuid.UUID
    student_id: uuid.UUID
    visited_on: date
    mode: str
    notes: str
    participant_ids: list[uuid.UUID]
    author_id: uuid.UUID | None
    school_year: str


class GuidanceOut(msgspec.Struct):
    id: uuid.UUID
    case_id: uuid.UUID
    text: str
    author_id: uuid.UUID | None
    created_at: datetime
    school_year: str


class CaseOut(msgspec.Struct):
    """A case file with what the caller's role may see: a section the role may not read
    is ``null`` (never an empty list that could be mistaken for "nothing recorded")."""

    id: uuid.UUID
    code: str
    student_id: uuid.UUID
    status: str
    opened_on: date
    review_on: date
    closed_on: date | None
    open_reason: str
    close_reason: str | None
    support_plan: str | None
    care_categories: list[CategoryOut] | None
    pairings: list[PairingOut] | None
    support_logs: list[SupportLogOut] | None
    home_visits: list[HomeVisitOut] | None
    guidance: list[GuidanceOut] | None
    # Whether entries before the current school year are included (SPEC P3).
    include_earlier: bool
    # Counselors only: the student's screening results in use; left out for everyone else.
    screening: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET


class CaseSummary(msgspec.Struct):
    id: uuid.UUID
    code: str
    student_id: uuid.UUID
    status: str


class CaseClosed(msgspec.Struct):
    id: uuid.UUID
    status: str
    closed_on: date


class TimelineItem(msgspec.Struct):
    at: date
    kind: str
    summary: str


class TaskItem(msgspec.Struct, omit_defaults=True):
    kind: str
    due_on: date
    overdue: bool
    case_id: uuid.UUID | None = None
    student_id: uuid.UUID | None = None
    # Explicit tasks only: the id to mark done (POST /api/v1/me/tasks/{id}/done).
    id: uuid.UUID | None = None
    # Home visits only: how many visits are still owed this school year.
    remaining: int | None = None


class VisitRequirementOut(msgspec.Struct):
    school_id: uuid.UUID
    school_year: str
    class_teacher_visits: int
    mentor_visits: int


class VisitProgressItem(msgspec.Struct, omit_defaults=True):
    """Counts only: students, visits, and students whose visits are complete."""

    scope: Literal["class", "paired"]
    required_per_student: int
    students: int
    students_done: int
    visits: int
    class_id: uuid.UUID | None = None
    class_name: str | None = None


class VisitProgress(msgspec.Struct):
    school_year: str | None
    items: list[VisitProgressItem]


class EmergencyGrantCreated(msgspec.Struct):
    id: uuid.UUID
    expires_at: datetime


class EmergencyGrantOut(msgspec.Struct):
    id: uuid.UUID
    user_id: uuid.UUID
    username: str
    student_id: uuid.UUID
    school_id: uuid.UUID
    granted_at: datetime
    expires_at: datetime
    live: bool
    reason: str
    # Audit events recorded under the grant (each flagged ``emergency``).
    accesses: int
    reviewed_at: datetime | None
    reviewed_by: uuid.UUID | None
    review_note: str | None


# -- lists (each ``{items: [...]}``) ---------------------------------------------------


class CaseList(msgspec.Struct):
    items: list[CaseSummary]


class TimelineList(msgspec.Struct):
    items: list[TimelineItem]


class PairingList(msgspec.Struct):
    items: list[PairingOut]


class SupportLogList(msgspec.Struct):
    items: list[SupportLogOut]


class HomeVisitList(msgspec.Struct):
    items: list[HomeVisitOut]


class TaskList(msgspec.Struct):
    items: list[TaskItem]


class EmergencyGrantList(msgspec.Struct):
    items: list[EmergencyGrantOut]
