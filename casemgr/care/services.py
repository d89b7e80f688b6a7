"""Care categories, case files (一人一册), pairings, support logs and guidance.

Every function takes the request context and reaches a student only through
``ctx.student`` (decide, then unwrap the student's key) or, for lists, through
``ctx.decide`` per student before any key is unwrapped. Everything about a student is
sealed under that student's data key (``casemgr.care.models``).

One open file per student: every change of a file's status happens after
``lock_student``, which on PostgreSQL takes the student row ``FOR UPDATE`` (and on SQLite
is implied by the ``BEGIN IMMEDIATE`` every transaction starts with), and then re-reads
the student's files. Two parallel opens therefore see each other: one opens, the other
answers 409 with the open file's id.

Functions other features call (screening opens or links a file and writes guidance):
``open_or_link_case``, ``add_guidance``; explicit follow-up tasks are in
``casemgr.care.tasks.add_task``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, NoReturn, TypeVar, cast

import msgspec
from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.accounts.models import RoleGrant, User
from casemgr.audit.services import CARE_PROGRAMME
from casemgr.authz import Decision, Permission, Role
from casemgr.care.models import (
    CareCategory,
    CaseFile,
    Guidance,
    HomeVisit,
    Pairing,
    PairingMentor,
    SupportLog,
)
from casemgr.care.schemas import (
    CaseClosed,
    CaseOut,
    CasePatch,
    CaseSummary,
    CategoryEndIn,
    CategoryIn,
    CategoryOut,
    GuidanceOut,
    HomeVisitOut,
    PairingEndIn,
    PairingIn,
    PairingOut,
    StaffOut,
    SupportLogIn,
    SupportLogOut,
    TimelineItem,
)
from casemgr.context import LoadedStudent, RequestContext, StudentAccess
from casemgr.crypto import Crypto, FieldCipher
from casemgr.crypto.models import DataKey
from casemgr.errors import Conflict, DomainError, InvalidInput
from casemgr.schools.models import SchoolClass
from casemgr.schoolyear import calendar_school_year, current_school_year, first_day
from casemgr.students.models import Student
from casemgr.students.services import new_student_code

# A file is reviewed every 90 days unless its writers set another date (SPEC §4).
CASE_REVIEW_DAYS = 90
# A category membership is reviewed yearly unless a review date is given (SPEC P3).
CATEGORY_REVIEW_DAYS = 365
OPEN = "open"
CLOSED = "closed"
# Sealed as the reason of a file opened because a category was recorded.
OPENED_WITH_CATEGORY = "Opened when a care category was recorded."
# Staff who may be mentors (SPEC §4: staff of the student's school with a content role).
MENTOR_ROLES = (Role.TEACHER.value, Role.CLASS_TEACHER.value, Role.COUNSELOR.value)
# Staff who may take part in a home visit: anyone working in the school.
STAFF_ROLES = (*MENTOR_ROLES, Role.SCHOOL_LEADER.value)
EXCERPT = 80
Q = TypeVar("Q")


# -- small helpers -----------------------------------------------------------------------


def clean(field_name: str, value: str | None, *, required: bool = True) -> str | None:
    """Trimmed text; blank is refused (422 naming the field) or, if optional, None."""
    text = (value or "").strip()
    if not text:
        if required:
            raise InvalidInput.field(field_name, "must not be blank")
        return None
    return text


def required_text(field_name: str, value: str | None) -> str:
    text = clean(field_name, value)
    assert text is not None
    return text


def excerpt(text: str | None, limit: int = EXCERPT) -> str:
    """The first line of ``text``, cut to ``limit`` characters: timeline summaries."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def not_after_today(field_name: str, day: date) -> None:
    if day > clock.today():
        raise InvalidInput.field(field_name, "must not be in the future")


async def lock_student(session: AsyncSession, student_id: uuid.UUID) -> None:
    """Serialise changes to one student's files (see the module docstring)."""
    await session.execute(select(Student.id).where(Student.id == student_id).with_for_update())


def may(ctx: RequestContext, access: StudentAccess, perm: Permission) -> Decision:
    """The caller's decision on ``perm`` for a student already reached (no side effects)."""
    student = access.student
    return ctx.decide(
        perm, school_id=student.school_id, class_id=student.class_id, student_id=student.id
    )


async def refuse(
    ctx: RequestContext,
    access: StudentAccess,
    action: str,
    error: DomainError,
    *,
    resource_type: str,
    resource_id: uuid.UUID | None,
) -> NoReturn:
    """Leave a refused change (a conflict) in the trail, in its own transaction, and raise.

    The request's unfinished work is rolled back first (``audit.record_denial``).
    """
    await ctx.refuse(
        action, error, access=access, resource_type=resource_type, resource_id=resource_id
    )


class StudentKeys:
    """Student data keys for a list, each unwrapped at most once, after its decision."""

    def __init__(self, crypto: Crypto) -> None:
        self.crypto = crypto
        self._ciphers: dict[uuid.UUID, FieldCipher] = {}

    def cipher(
        self, key_id: uuid.UUID, kek_version: int | None, wrapped: bytes | None
    ) -> FieldCipher:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self.crypto.open_data_key(key_id, kek_version, wrapped)
            self._ciphers[key_id] = cipher
        return cipher

    def known(self, key_id: uuid.UUID) -> FieldCipher:
        """A key unwrapped earlier in this request (``KeyError`` otherwise)."""
        return self._ciphers[key_id]


def with_live_key(query: Q) -> Q:
    """Join a query over students with their data keys, leaving erased students out."""
    joined: Any = query
    return cast(
        Q,
        joined.join(DataKey, DataKey.id == Student.data_key_id).where(DataKey.wrapped.is_not(None)),
    )


@dataclass(frozen=True)
class SchoolYears:
    """Each school's current school year (the clean slate of SPEC P3), asked once."""

    session: AsyncSession
    years: dict[uuid.UUID, str] = field(default_factory=dict)

    async def of(self, school_id: uuid.UUID) -> str:
        if school_id not in self.years:
            self.years[school_id] = await current_school_year(self.session, school_id)
        return self.years[school_id]


# -- record builders (the services below and the demo seal through these) ---------------


def new_case_code() -> str:
    """Random and neutral, in the student codes' shape: nothing in it depends on the
    student, the category, the class or the date (SPEC P3)."""
    return new_student_code()


def new_case_file(
    cipher: FieldCipher,
    *,
    student_id: uuid.UUID,
    code: str,
    reason: str,
    opened_on: date,
    created_by: uuid.UUID | None,
    review_on: date | None = None,
) -> CaseFile:
    case = CaseFile(id=uuid.uuid4(), student_id=student_id, code=code, created_by=created_by)
    cipher.seal_fields(
        case,
        status=OPEN,
        opened_on=opened_on,
        open_reason=reason,
        closed_on=None,
        close_reason=None,
        support_plan=None,
        review_on=review_on or opened_on + timedelta(days=CASE_REVIEW_DAYS),
    )
    return case


def close_case_file(cipher: FieldCipher, case: CaseFile, *, closed_on: date, reason: str) -> None:
    """Seal a file's closing (callers hold the student's lock and checked it was open)."""
    cipher.seal_fields(case, status=CLOSED, closed_on=closed_on, close_reason=reason)


def new_category(
    cipher: FieldCipher,
    *,
    student_id: uuid.UUID,
    case_id: uuid.UUID,
    category: str,
    since: date,
    details: str | None,
    review_on: date | None,
    created_by: uuid.UUID | None,
) -> CareCategory:
    record = CareCategory(
        id=uuid.uuid4(), student_id=student_id, case_id=case_id, created_by=created_by
    )
    cipher.seal_fields(
        record,
        category=category,
        since=since,
        details=details,
        review_on=review_on,
        ended_on=None,
        end_reason=None,
    )
    return record


def new_pairing(
    cipher: FieldCipher,
    *,
    case: CaseFile,
    mode: str,
    goals: str,
    starts_on: date,
    mentor_ids: Sequence[uuid.UUID],
    lead_id: uuid.UUID | None,
    created_by: uuid.UUID | None,
) -> tuple[Pairing, list[PairingMentor]]:
    pairing = Pairing(
        id=uuid.uuid4(), case_id=case.id, student_id=case.student_id, created_by=created_by
    )
    cipher.seal_fields(
        pairing, mode=mode, goals=goals, starts_on=starts_on, ends_on=None, end_reason=None
    )
    mentors = [
        PairingMentor(
            pairing_id=pairing.id,
            user_id=user_id,
            student_id=case.student_id,
            is_lead=user_id == lead_id,
        )
        for user_id in mentor_ids
    ]
    return pairing, mentors


def new_support_log(
    cipher: FieldCipher,
    *,
    case: CaseFile,
    author_id: uuid.UUID | None,
    school_year: str,
    occurred_on: date,
    kind: str,
    notes: str,
    follow_up_on: date | None,
) -> SupportLog:
    log = SupportLog(
        id=uuid.uuid4(),
        case_id=case.id,
        student_id=case.student_id,
        author_id=author_id,
        school_year=school_year,
    )
    cipher.seal_fields(
        log, occurred_on=occurred_on, kind=kind, notes=notes, follow_up_on=follow_up_on
    )
    return log


def new_home_visit(
    cipher: FieldCipher,
    *,
    student_id: uuid.UUID,
    author_id: uuid.UUID | None,
    school_year: str,
    visited_on: date,
    mode: str,
    notes: str,
    participant_ids: Sequence[uuid.UUID],
) -> HomeVisit:
    visit = HomeVisit(
        id=uuid.uuid4(), student_id=student_id, author_id=author_id, school_year=school_year
    )
    cipher.seal_fields(
        visit,
        visited_on=visited_on,
        mode=mode,
        notes=notes,
        participant_ids=list(participant_ids),
    )
    return visit


def new_guidance(
    cipher: FieldCipher,
    *,
    case: CaseFile,
    author_id: uuid.UUID | None,
    school_year: str,
    text: str,
) -> Guidance:
    note = Guidance(
        id=uuid.uuid4(),
        case_id=case.id,
        student_id=case.student_id,
        author_id=author_id,
        school_year=school_year,
    )
    cipher.seal_fields(note, text=text)
    return note


# -- views of sealed records ------------------------------------------------------------


def category_out(cipher: FieldCipher, record: CareCategory) -> CategoryOut:
    values = cipher.open_fields(record)
    return CategoryOut(
        id=record.id,
        category=values["category"],
        since=values["since"],
        ended_on=values["ended_on"],
        review_on=values["review_on"],
        details=values["details"],
        end_reason=values["end_reason"],
        recorded_on=record.created_at.date(),
    )


def pairing_out(
    cipher: FieldCipher, pairing: Pairing, mentors: Iterable[PairingMentor]
) -> PairingOut:
    values = cipher.open_fields(pairing)
    mentors = sorted(mentors, key=lambda m: (not m.is_lead, str(m.user_id)))
    return PairingOut(
        id=pairing.id,
        case_id=pairing.case_id,
        student_id=pairing.student_id,
        mode=values["mode"],
        mentor_ids=[m.user_id for m in mentors],
        lead_id=next((m.user_id for m in mentors if m.is_lead), None),
        goals=values["goals"],
        starts_on=values["starts_on"],
        ends_on=values["ends_on"],
        end_reason=values["end_reason"],
        ended=pairing.ended_at is not None,
    )


def support_log_out(cipher: FieldCipher, log: SupportLog) -> SupportLogOut:
    values = cipher.open_fields(log)
    return SupportLogOut(
        id=log.id,
        case_id=log.case_id,
        occurred_on=values["occurred_on"],
        kind=values["kind"],
        notes=values["notes"],
        follow_up_on=values["follow_up_on"],
        author_id=log.author_id,
        school_year=log.school_year,
    )


def home_visit_out(cipher: FieldCipher, visit: HomeVisit) -> HomeVisitOut:
    values = cipher.open_fields(visit)
    return HomeVisitOut(
        id=visit.id,
        student_id=visit.student_id,
        visited_on=values["visited_on"],
        mode=values["mode"],
        notes=values["notes"],
        participant_ids=values["participant_ids"],
        author_id=visit.author_id,
        school_year=visit.school_year,
    )


def guidance_out(cipher: FieldCipher, note: Guidance) -> GuidanceOut:
    return GuidanceOut(
        id=note.id,
        case_id=note.case_id,
        text=cipher.open_field(note, "text"),
        author_id=note.author_id,
        created_at=note.created_at,
        school_year=note.school_year,
    )


# -- reaching a file ----------------------------------------------------------------------


async def case_access(
    ctx: RequestContext,
    perm: Permission,
    case_id: uuid.UUID,
    *,
    resource_type: str = "case",
) -> tuple[CaseFile, StudentAccess]:
    """The file and its student, if the caller may ``perm`` it (404/403 audited otherwise).

    A file whose student was erased is "not found" like one that never existed. The file,
    its student with the wrapped key and the school's current school year come in one
    statement (each statement costs a read more than the rows it brings).
    """
    row = (await ctx.session.execute(_CASE_WITH_STUDENT, {"case_id": case_id})).one_or_none()
    if row is None:
        await ctx.require(perm, resource_type=resource_type, resource_id=case_id, exists=False)
    assert row is not None
    case, student, kek_version, wrapped, year = row
    loaded = LoadedStudent(
        student, kek_version, wrapped, (year or calendar_school_year()) if student else None
    )
    access = await ctx.student(
        perm, case.student_id, resource_type=resource_type, resource_id=case_id, loaded=loaded
    )
    return case, access


_CASE_WITH_STUDENT = (
    select(
        CaseFile,
        Student,
        DataKey.kek_version,
        DataKey.wrapped,
        select(func.max(SchoolClass.school_year))
        .where(SchoolClass.school_id == Student.school_id)
        .correlate(Student)
        .scalar_subquery(),
    )
    .outerjoin(Student, Student.id == CaseFile.student_id)
    .outerjoin(DataKey, DataKey.id == Student.data_key_id)
    .where(CaseFile.id == bindparam("case_id"))
)


async def student_cases(session: AsyncSession, student_id: uuid.UUID) -> list[CaseFile]:
    """A student's files as the database holds them now (after ``lock_student``)."""
    return list(
        await session.scalars(
            select(CaseFile)
            .where(CaseFile.student_id == student_id)
            .order_by(CaseFile.created_at)
            .execution_options(populate_existing=True)
        )
    )


async def open_case_of(
    session: AsyncSession, cipher: FieldCipher, student_id: uuid.UUID
) -> CaseFile | None:
    for case in await student_cases(session, student_id):
        if cipher.open_field(case, "status") == OPEN:
            return case
    return None


async def reload_open(
    ctx: RequestContext,
    access: StudentAccess,
    case: CaseFile,
    action: str,
    *,
    resource_type: str = "case",
    resource_id: uuid.UUID | None = None,
) -> None:
    """Lock the student, re-read the file and refuse (409, audited) unless it is open."""
    await lock_student(ctx.session, access.id)
    await ctx.session.refresh(case)
    if access.cipher.open_field(case, "status") != OPEN:
        await refuse(
            ctx,
            access,
            action,
            Conflict("The file is closed: nothing can be added to it.", case_id=str(case.id)),
            resource_type=resource_type,
            resource_id=resource_id or case.id,
        )


# -- case files -----------------------------------------------------------------------------


class CaseAlreadyOpen(Conflict):
    def __init__(self, case_id: uuid.UUID) -> None:
        super().__init__(
            "This student has an open file already; add to it instead.",
            id=str(case_id),
            case_id=str(case_id),
        )


async def _unused_case_code(session: AsyncSession) -> str:
    while True:
        code = new_case_code()
        if await session.scalar(select(CaseFile.id).where(CaseFile.code == code)) is None:
            return code


async def open_or_link_case(
    ctx: RequestContext, access: StudentAccess, reason: str
) -> tuple[CaseFile, bool]:
    """The student's open file, opening one when there is none: ``(file, opened)``.

    The caller has decided that it may write to the student's file (``access``). A new
    file takes over the student's live care categories, so the open file always holds
    them. Opening is audited (``case:open``), flagged when ``access`` is an emergency.
    """
    await lock_student(ctx.session, access.id)
    existing = await open_case_of(ctx.session, access.cipher, access.id)
    if existing is not None:
        return existing, False
    case = new_case_file(
        access.cipher,
        student_id=access.id,
        code=await _unused_case_code(ctx.session),
        reason=reason,
        opened_on=clock.today(),
        created_by=ctx.principal.user_id,
    )
    ctx.session.add(case)
    await ctx.session.flush()
    for record in await ctx.session.scalars(
        select(CareCategory).where(CareCategory.student_id == access.id)
    ):
        if record.case_id != case.id and access.cipher.open_field(record, "ended_on") is None:
            record.case_id = case.id
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.CASE_OPEN, resource_type="case", resource_id=case.id, access=access
    )
    return case, True


async def open_case(ctx: RequestContext, student_id: uuid.UUID, reason: str) -> CaseFile:
    """``POST /api/v1/cases``: open a file, or 409 naming the one that is open."""
    access = await ctx.student(Permission.CASE_WRITE, student_id, resource_type="case")
    text = required_text("reason", reason)
    case, opened = await open_or_link_case(ctx, access, text)
    if not opened:
        await refuse(
            ctx,
            access,
            audit.Action.CASE_OPEN,
            CaseAlreadyOpen(case.id),
            resource_type="case",
            resource_id=case.id,
        )
    return case


async def update_case(ctx: RequestContext, case_id: uuid.UUID, patch: CasePatch) -> CaseOut:
    """Set the support plan or the review date of an open file."""
    case, access = await case_access(ctx, Permission.CASE_WRITE, case_id)
    changes: dict[str, Any] = {}
    if patch.support_plan is not msgspec.UNSET:
        changes["support_plan"] = clean("support_plan", patch.support_plan, required=False)
    if patch.review_on is not msgspec.UNSET:
        opened_on = access.cipher.open_field(case, "opened_on")
        if patch.review_on < opened_on:
            raise InvalidInput.field("review_on", "must not be before the file was opened")
        changes["review_on"] = patch.review_on
    if not changes:
        raise InvalidInput.field("body", "give support_plan or review_on")
    await reload_open(ctx, access, case, audit.Action.CASE_UPDATE)
    access.cipher.seal_fields(case, **changes)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.CASE_UPDATE,
        resource_type="case",
        resource_id=case.id,
        access=access,
        detail={"fields": sorted(changes)},
    )
    return await _case_view(ctx, case, access, include_earlier=False)


async def close_case(ctx: RequestContext, case_id: uuid.UUID, reason: str) -> CaseClosed:
    """Close an open file; its live pairings end with it (mentors lose their reach)."""
    case, access = await case_access(ctx, Permission.CASE_WRITE, case_id)
    text = required_text("reason", reason)
    await lock_student(ctx.session, access.id)
    await ctx.session.refresh(case)
    if access.cipher.open_field(case, "status") != OPEN:
        await refuse(
            ctx,
            access,
            audit.Action.CASE_CLOSE,
            Conflict("The file is closed already.", case_id=str(case.id)),
            resource_type="case",
            resource_id=case.id,
        )
    today = clock.today()
    close_case_file(access.cipher, case, closed_on=today, reason=text)
    ended = 0
    for pairing in await ctx.session.scalars(
        select(Pairing).where(Pairing.case_id == case.id, Pairing.ended_at.is_(None))
    ):
        pairing.ended_at = clock.now()
        access.cipher.seal_fields(pairing, ends_on=today)
        ended += 1
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.CASE_CLOSE,
        resource_type="case",
        resource_id=case.id,
        access=access,
        detail={"pairings_ended": ended},
    )
    return CaseClosed(id=case.id, status=CLOSED, closed_on=today)


async def list_cases(
    ctx: RequestContext,
    *,
    include_earlier: bool = False,
    status: str | None = None,
    student_id: uuid.UUID | None = None,
) -> list[CaseSummary]:
    """Files within the caller's reach: open ones and those closed this school year
    (older ones on an explicit, audited request)."""
    if not ctx.may_ever(Permission.CASE_READ):
        await ctx.require(Permission.CASE_READ, resource_type="case")
    principal = ctx.principal
    reach = []
    if principal.class_ids:
        reach.append(Student.class_id.in_(principal.class_ids))
    personal = principal.paired_student_ids | principal.emergency_student_ids
    if personal:
        reach.append(Student.id.in_(personal))
    # Narrowed here, decided per file below (a class teacher's school holds more files
    # than their classes do; each is decided before its key is unwrapped).
    schools = ctx.authorizer.schools_holding(principal, Permission.CASE_READ)
    if schools:
        reach.append(Student.school_id.in_(schools))
    if not reach:
        rows: list[Any] = []
    else:
        query = with_live_key(
            select(CaseFile, Student, DataKey.kek_version, DataKey.wrapped).join(
                Student, Student.id == CaseFile.student_id
            )
        ).where(or_(*reach))
        if student_id is not None:
            query = query.where(CaseFile.student_id == student_id)
        rows = list((await ctx.session.execute(query.order_by(CaseFile.created_at))).all())
    keys = StudentKeys(ctx.crypto)
    years = SchoolYears(ctx.session)
    items: list[CaseSummary] = []
    emergency = False
    for case, student, version, wrapped in rows:
        decision = ctx.decide(
            Permission.CASE_READ,
            school_id=student.school_id,
            class_id=student.class_id,
            student_id=student.id,
        )
        if not decision.allowed:
            continue
        cipher = keys.cipher(student.data_key_id, version, wrapped)
        values = cipher.open_fields(case, "status", "closed_on")
        if status is not None and values["status"] != status:
            continue
        if not include_earlier and values["status"] == CLOSED:
            cutoff = first_day(await years.of(student.school_id))
            if values["closed_on"] is not None and values["closed_on"] < cutoff:
                continue
        emergency = emergency or decision.emergency
        items.append(
            CaseSummary(id=case.id, code=case.code, student_id=student.id, status=values["status"])
        )
    await ctx.audit(
        audit.Action.CASE_READ_EARLIER if include_earlier else audit.Action.CASE_LIST,
        resource_type="case",
        decision=Decision(True, 200, None, emergency=emergency),
        detail={"count": len(items)},
    )
    return items


async def student_files(ctx: RequestContext, student_id: uuid.UUID) -> list[CaseSummary]:
    """One student's files (open, and closed this school year), for a caller who reaches
    them under the rule of ``GET /api/v1/cases/{id}``.

    Unlike ``list_cases``, which lists by role, this decides on the student: so it also
    serves whoever reaches the files through an emergency grant alone (a school leader,
    whose role never lists files). Refusals are audited (404 / 403).
    """
    access = await ctx.student(Permission.CASE_READ, student_id, resource_type="case")
    cutoff = first_day(await current_school_year(ctx.session, access.school_id))
    items = []
    for case in await student_cases(ctx.session, student_id):
        values = access.cipher.open_fields(case, "status", "closed_on")
        if values["status"] == CLOSED and values["closed_on"] and values["closed_on"] < cutoff:
            continue
        items.append(
            CaseSummary(id=case.id, code=case.code, student_id=student_id, status=values["status"])
        )
    await ctx.audit(
        audit.Action.CASE_LIST,
        resource_type="case",
        access=access,
        detail={"count": len(items)},
    )
    return items


# The file's lists, each built once: building a statement per request cost more than
# reading its rows (~70 µs of ~230 µs per statement on these cores).
_CATEGORIES = (
    select(CareCategory)
    .where(CareCategory.case_id == bindparam("case_id"))
    .order_by(CareCategory.created_at)
)
_LOGS = select(SupportLog).where(SupportLog.case_id == bindparam("case_id"))
_LOGS_OF_YEAR = _LOGS.where(SupportLog.school_year == bindparam("year"))
_VISITS = select(HomeVisit).where(HomeVisit.student_id == bindparam("student_id"))
_VISITS_OF_YEAR = _VISITS.where(HomeVisit.school_year == bindparam("year"))
_NOTES = select(Guidance).where(Guidance.case_id == bindparam("case_id"))
_NOTES_OF_YEAR = _NOTES.where(Guidance.school_year == bindparam("year"))


@dataclass
class CaseContents:
    """What a file holds, opened, within the window asked for (SPEC P3)."""

    categories: list[CategoryOut] | None = None
    pairings: list[PairingOut] | None = None
    support_logs: list[SupportLogOut] | None = None
    home_visits: list[HomeVisitOut] | None = None
    guidance: list[GuidanceOut] | None = None


async def _contents(
    ctx: RequestContext, case: CaseFile, access: StudentAccess, *, include_earlier: bool
) -> CaseContents:
    session, cipher = ctx.session, access.cipher
    year = access.school_year or await current_school_year(session, access.school_id)
    cutoff = None if include_earlier else first_day(year)
    contents = CaseContents()
    if may(ctx, access, Permission.CARE_CATEGORY_READ).allowed:
        records = await session.scalars(_CATEGORIES, {"case_id": case.id})
        contents.categories = [
            c
            for c in (category_out(cipher, r) for r in records)
            if cutoff is None or c.ended_on is None or c.ended_on >= cutoff
        ]
    if may(ctx, access, Permission.PAIRING_READ).allowed:
        contents.pairings = [
            p
            for p in await pairings_of(session, cipher, [case.id])
            if cutoff is None or p.ends_on is None or p.ends_on >= cutoff
        ]
    of_file = {"case_id": case.id, "year": year}
    if may(ctx, access, Permission.SUPPORT_LOG_READ).allowed:
        log_rows = await session.scalars(_LOGS if cutoff is None else _LOGS_OF_YEAR, of_file)
        logs = [support_log_out(cipher, r) for r in log_rows]
        contents.support_logs = sorted(logs, key=lambda x: x.occurred_on, reverse=True)
    if may(ctx, access, Permission.HOME_VISIT_READ).allowed:
        # Every visit to the student's family, whether or not it came with the file.
        visit_rows = await session.scalars(
            _VISITS if cutoff is None else _VISITS_OF_YEAR,
            {"student_id": case.student_id, "year": year},
        )
        visits = [home_visit_out(cipher, r) for r in visit_rows]
        contents.home_visits = sorted(visits, key=lambda x: x.visited_on, reverse=True)
    if may(ctx, access, Permission.GUIDANCE_READ).allowed:
        note_rows = await session.scalars(_NOTES if cutoff is None else _NOTES_OF_YEAR, of_file)
        notes = [guidance_out(cipher, r) for r in note_rows]
        contents.guidance = sorted(notes, key=lambda x: x.created_at, reverse=True)
    return contents


async def _case_view(
    ctx: RequestContext, case: CaseFile, access: StudentAccess, *, include_earlier: bool
) -> CaseOut:
    values = access.cipher.open_fields(case)
    contents = await _contents(ctx, case, access, include_earlier=include_earlier)
    # Screening builds on the care programme, so it is imported here, not at the top.
    from casemgr.screening.services import screening_for_case

    screening = await screening_for_case(ctx, access)
    return CaseOut(
        id=case.id,
        code=case.code,
        student_id=case.student_id,
        status=values["status"],
        opened_on=values["opened_on"],
        review_on=values["review_on"],
        closed_on=values["closed_on"],
        open_reason=values["open_reason"],
        close_reason=values["close_reason"],
        support_plan=values["support_plan"],
        care_categories=contents.categories,
        pairings=contents.pairings,
        support_logs=contents.support_logs,
        home_visits=contents.home_visits,
        guidance=contents.guidance,
        include_earlier=include_earlier,
        screening=msgspec.UNSET if screening is None else screening,
    )


async def get_case(
    ctx: RequestContext, case_id: uuid.UUID, *, include_earlier: bool = False
) -> CaseOut:
    case, access = await case_access(ctx, Permission.CASE_READ, case_id)
    view = await _case_view(ctx, case, access, include_earlier=include_earlier)
    await ctx.audit(
        audit.Action.CASE_READ_EARLIER if include_earlier else audit.Action.CASE_READ,
        resource_type="case",
        resource_id=case.id,
        access=access,
    )
    return view


async def timeline(
    ctx: RequestContext, case_id: uuid.UUID, *, include_earlier: bool = False
) -> list[TimelineItem]:
    """Every event of the file the caller may see, newest first, as short summaries."""
    case, access = await case_access(ctx, Permission.CASE_READ, case_id)
    values = access.cipher.open_fields(case)
    contents = await _contents(ctx, case, access, include_earlier=include_earlier)
    year = access.school_year or await current_school_year(ctx.session, access.school_id)
    cutoff = None if include_earlier else first_day(year)
    events: list[TimelineItem] = []

    def add(at: date | None, kind: str, head: str, tail: str | None = None) -> None:
        if at is None or (cutoff is not None and at < cutoff):
            return
        summary = f"{head}: {excerpt(tail)}" if excerpt(tail) else head
        events.append(TimelineItem(at, kind, summary))

    # Added in the order things happen, so that a stable sort keeps a day's order.
    add(values["opened_on"], "case_opened", "File opened", values["open_reason"])
    for c in contents.categories or []:
        add(
            c.recorded_on,
            "category_added",
            f"Care category recorded: {c.category} (since {c.since.isoformat()})",
        )
    for p in contents.pairings or []:
        mentors = len(p.mentor_ids)
        plural = "" if mentors == 1 else "s"
        add(p.starts_on, "pairing_started", f"Pairing started ({p.mode}, {mentors} mentor{plural})")
    for log in sorted(contents.support_logs or [], key=lambda x: x.occurred_on):
        add(log.occurred_on, "support_log", f"Support ({log.kind})", log.notes)
    for visit in sorted(contents.home_visits or [], key=lambda x: x.visited_on):
        add(visit.visited_on, "home_visit", f"Home visit ({visit.mode})", visit.notes)
    for note in sorted(contents.guidance or [], key=lambda x: x.created_at):
        add(note.created_at.date(), "guidance", "Guidance for teachers", note.text)
    for c in contents.categories or []:
        add(c.ended_on, "category_ended", f"Care category ended: {c.category}", c.end_reason)
    for p in contents.pairings or []:
        add(p.ends_on, "pairing_ended", "Pairing ended", p.end_reason)
    if values["status"] == CLOSED:
        add(values["closed_on"], "case_closed", "File closed", values["close_reason"])
    events.reverse()
    events.sort(key=lambda e: e.at, reverse=True)
    await ctx.audit(
        audit.Action.CASE_READ_EARLIER if include_earlier else audit.Action.CASE_TIMELINE,
        resource_type="case",
        resource_id=case.id,
        access=access,
        detail={"count": len(events)},
    )
    return events


# -- care categories ------------------------------------------------------------------------


async def live_categories(
    session: AsyncSession, cipher: FieldCipher, student_id: uuid.UUID
) -> dict[str, CareCategory]:
    live: dict[str, CareCategory] = {}
    for record in await session.scalars(
        select(CareCategory)
        .where(CareCategory.student_id == student_id)
        .execution_options(populate_existing=True)
    ):
        values = cipher.open_fields(record, "category", "ended_on")
        if values["ended_on"] is None:
            live[values["category"]] = record
    return live


async def add_category(
    ctx: RequestContext, student_id: uuid.UUID, data: CategoryIn
) -> tuple[CareCategory, CaseFile]:
    """Record a care category; the student's file opens if none is open (SPEC §4)."""
    access = await ctx.student(
        Permission.CARE_CATEGORY_WRITE, student_id, resource_type="care_category"
    )
    details = clean("details", data.details, required=False)
    not_after_today("since", data.since)
    if data.review_on is not None and data.review_on < data.since:
        raise InvalidInput.field("review_on", "must not be before since")
    await lock_student(ctx.session, access.id)
    live = await live_categories(ctx.session, access.cipher, access.id)
    if data.category in live:
        await refuse(
            ctx,
            access,
            audit.Action.CARE_CATEGORY_ADD,
            Conflict(
                "This category is recorded for the student already and has not ended.",
                id=str(live[data.category].id),
            ),
            resource_type="care_category",
            resource_id=live[data.category].id,
        )
    case, _ = await open_or_link_case(ctx, access, OPENED_WITH_CATEGORY)
    record = new_category(
        access.cipher,
        student_id=access.id,
        case_id=case.id,
        category=data.category,
        since=data.since,
        details=details,
        review_on=data.review_on or clock.today() + timedelta(days=CATEGORY_REVIEW_DAYS),
        created_by=ctx.principal.user_id,
    )
    ctx.session.add(record)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.CARE_CATEGORY_ADD,
        resource_type="care_category",
        resource_id=record.id,
        access=access,
    )
    return record, case


async def end_category(
    ctx: RequestContext, category_id: uuid.UUID, data: CategoryEndIn
) -> CategoryOut:
    """End a membership; its history stays (SPEC §4)."""
    record = await ctx.session.get(CareCategory, category_id)
    perm = Permission.CARE_CATEGORY_WRITE
    if record is None:
        await ctx.require(
            perm, resource_type="care_category", resource_id=category_id, exists=False
        )
    assert record is not None
    access = await ctx.student(
        perm, record.student_id, resource_type="care_category", resource_id=category_id
    )
    reason = required_text("reason", data.reason)
    not_after_today("ended_on", data.ended_on)
    await lock_student(ctx.session, access.id)
    await ctx.session.refresh(record)
    since, ended_on = access.cipher.open_fields(record, "since", "ended_on").values()
    if ended_on is not None:
        await refuse(
            ctx,
            access,
            audit.Action.CARE_CATEGORY_END,
            Conflict("This category has ended already."),
            resource_type="care_category",
            resource_id=record.id,
        )
    if data.ended_on < since:
        raise InvalidInput.field("ended_on", "must not be before since")
    access.cipher.seal_fields(record, ended_on=data.ended_on, end_reason=reason)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.CARE_CATEGORY_END,
        resource_type="care_category",
        resource_id=record.id,
        access=access,
    )
    return category_out(access.cipher, record)


# -- pairings -------------------------------------------------------------------------------


async def pairings_of(
    session: AsyncSession, cipher: FieldCipher, case_ids: Sequence[uuid.UUID]
) -> list[PairingOut]:
    pairings = list(
        await session.scalars(
            select(Pairing).where(Pairing.case_id.in_(case_ids)).order_by(Pairing.created_at)
        )
    )
    if not pairings:
        return []
    mentors: dict[uuid.UUID, list[PairingMentor]] = {p.id: [] for p in pairings}
    for mentor in await session.scalars(
        select(PairingMentor).where(PairingMentor.pairing_id.in_(list(mentors)))
    ):
        mentors[mentor.pairing_id].append(mentor)
    return [pairing_out(cipher, p, mentors[p.id]) for p in pairings]


async def staff_of_school(
    session: AsyncSession,
    school_id: uuid.UUID,
    user_ids: Iterable[uuid.UUID],
    roles: Sequence[str],
) -> set[uuid.UUID]:
    """Which of ``user_ids`` are active accounts holding one of ``roles`` in the school."""
    wanted = set(user_ids)
    if not wanted:
        return set()
    rows = await session.scalars(
        select(RoleGrant.user_id)
        .join(User, User.id == RoleGrant.user_id)
        .where(
            RoleGrant.user_id.in_(wanted),
            RoleGrant.school_id == school_id,
            RoleGrant.role.in_(roles),
            User.is_active.is_(True),
        )
    )
    return set(rows)


def _check_pairing_shape(data: PairingIn) -> uuid.UUID:
    """The lead mentor, after the rules of SPEC §4 (422 naming the field otherwise)."""
    mentors = data.mentor_ids
    if len(set(mentors)) != len(mentors):
        raise InvalidInput.field("mentor_ids", "must not name a mentor twice")
    if data.mode == "one_to_one":
        if len(mentors) != 1:
            raise InvalidInput.field("mentor_ids", "one_to_one takes exactly one mentor")
        if data.lead_id is not None and data.lead_id != mentors[0]:
            raise InvalidInput.field("lead_id", "must be the mentor")
        return mentors[0]
    if len(mentors) < 2:
        raise InvalidInput.field("mentor_ids", "many_to_one takes two or more mentors")
    if data.lead_id is None or data.lead_id not in mentors:
        raise InvalidInput.field("lead_id", "must be one of mentor_ids")
    return data.lead_id


async def create_pairing(ctx: RequestContext, case_id: uuid.UUID, data: PairingIn) -> Pairing:
    case, access = await case_access(
        ctx, Permission.PAIRING_CREATE, case_id, resource_type="pairing"
    )
    lead_id = _check_pairing_shape(data)
    goals = required_text("goals", data.goals)
    found = await staff_of_school(ctx.session, access.school_id, data.mentor_ids, MENTOR_ROLES)
    if found != set(data.mentor_ids):
        # One answer whether an id is unknown, of another school or of another role.
        raise InvalidInput.field(
            "mentor_ids",
            "each mentor must be an active teacher, class teacher or counselor of the"
            " student's school",
        )
    await reload_open(ctx, access, case, audit.Action.PAIRING_CREATE, resource_type="pairing")
    live = await ctx.session.scalar(
        select(Pairing.id).where(Pairing.case_id == case.id, Pairing.ended_at.is_(None))
    )
    if live is not None:
        await refuse(
            ctx,
            access,
            audit.Action.PAIRING_CREATE,
            Conflict("This file has a live pairing; end it first.", id=str(live)),
            resource_type="pairing",
            resource_id=live,
        )
    pairing, mentors = new_pairing(
        access.cipher,
        case=case,
        mode=data.mode,
        goals=goals,
        starts_on=data.starts_on,
        mentor_ids=data.mentor_ids,
        lead_id=lead_id,
        created_by=ctx.principal.user_id,
    )
    ctx.session.add(pairing)
    await ctx.session.flush()
    ctx.session.add_all(mentors)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.PAIRING_CREATE,
        resource_type="pairing",
        resource_id=pairing.id,
        access=access,
        detail={"mentors": len(mentors)},
    )
    return pairing


async def end_pairing(ctx: RequestContext, pairing_id: uuid.UUID, data: PairingEndIn) -> PairingOut:
    pairing = await ctx.session.get(Pairing, pairing_id)
    perm = Permission.PAIRING_CREATE
    if pairing is None:
        await ctx.require(perm, resource_type="pairing", resource_id=pairing_id, exists=False)
    assert pairing is not None
    access = await ctx.student(
        perm, pairing.student_id, resource_type="pairing", resource_id=pairing_id
    )
    reason = required_text("reason", data.reason)
    not_after_today("ended_on", data.ended_on)
    await lock_student(ctx.session, access.id)
    await ctx.session.refresh(pairing)
    if pairing.ended_at is not None:
        await refuse(
            ctx,
            access,
            audit.Action.PAIRING_END,
            Conflict("This pairing has ended already."),
            resource_type="pairing",
            resource_id=pairing.id,
        )
    if data.ended_on < access.cipher.open_field(pairing, "starts_on"):
        raise InvalidInput.field("ended_on", "must not be before the pairing started")
    pairing.ended_at = clock.now()
    access.cipher.seal_fields(pairing, ends_on=data.ended_on, end_reason=reason)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.PAIRING_END, resource_type="pairing", resource_id=pairing.id, access=access
    )
    mentors = await ctx.session.scalars(
        select(PairingMentor).where(PairingMentor.pairing_id == pairing.id)
    )
    return pairing_out(access.cipher, pairing, list(mentors))


async def case_pairings(ctx: RequestContext, case_id: uuid.UUID) -> list[PairingOut]:
    case, access = await case_access(ctx, Permission.PAIRING_READ, case_id, resource_type="pairing")
    items = await pairings_of(ctx.session, access.cipher, [case.id])
    await ctx.audit(
        audit.Action.PAIRING_LIST,
        resource_type="case",
        resource_id=case.id,
        access=access,
        detail={"count": len(items)},
    )
    return items


async def may_on_case(ctx: RequestContext, case_id: uuid.UUID, perm: Permission) -> bool:
    """Whether the caller may ``perm`` the student of ``case_id``, decided without a trace.

    For pages, to offer a form or a section only to those who may use it (the pairing
    form, the student's details on the file); what the page then does is decided, and a
    refusal audited, by the service it calls.
    """
    if not ctx.may_ever(perm):
        return False
    row = (
        await ctx.session.execute(
            select(Student.id, Student.school_id, Student.class_id)
            .join(CaseFile, CaseFile.student_id == Student.id)
            .where(CaseFile.id == case_id)
        )
    ).one_or_none()
    if row is None:
        return False
    student_id, school_id, class_id = row
    return ctx.decide(perm, school_id=school_id, class_id=class_id, student_id=student_id).allowed


async def mentor_candidates(ctx: RequestContext, case_id: uuid.UUID) -> list[StaffOut]:
    """Who may mentor the student of ``case_id``: the active teachers, class teachers and
    counselors of the student's school (SPEC §4), as ``create_pairing`` accepts them.

    For the pairing form: decided like ``create_pairing`` (404 / 403, audited), and the
    reading of colleagues' names is audited as a list of accounts naming the student it
    was made for.
    """
    _, access = await case_access(ctx, Permission.PAIRING_CREATE, case_id, resource_type="pairing")
    rows = (
        await ctx.session.execute(
            select(User.id, User.username, User.display_name)
            .where(
                User.id.in_(
                    select(RoleGrant.user_id).where(
                        RoleGrant.school_id == access.school_id,
                        RoleGrant.role.in_(MENTOR_ROLES),
                    )
                ),
                User.is_active.is_(True),
            )
            .order_by(User.display_name, User.username)
        )
    ).all()
    staff = [
        StaffOut(id=user_id, username=username, display_name=display_name or username)
        for user_id, username, display_name in rows
    ]
    await ctx.audit(
        audit.Action.USER_LIST,
        resource_type="user",
        access=access,
        purpose="emergency_access" if access.emergency else CARE_PROGRAMME,
        detail={"count": len(staff)},
    )
    return staff


async def school_pairings(
    ctx: RequestContext, school_id: uuid.UUID, *, include_earlier: bool = False
) -> list[PairingOut]:
    """A school's pairings, for the leaders and counselors who set them up: live ones and
    those ended this school year."""
    from casemgr.schools.models import School

    school = await ctx.session.get(School, school_id)
    decision = await ctx.require(
        Permission.PAIRING_CREATE,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        exists=school is not None,
    )
    cutoff = (
        None if include_earlier else first_day(await current_school_year(ctx.session, school_id))
    )
    rows = (
        await ctx.session.execute(
            with_live_key(
                select(Pairing, Student, DataKey.kek_version, DataKey.wrapped).join(
                    Student, Student.id == Pairing.student_id
                )
            )
            .where(Student.school_id == school_id)
            .order_by(Pairing.created_at)
        )
    ).all()
    mentors: dict[uuid.UUID, list[PairingMentor]] = {row[0].id: [] for row in rows}
    if mentors:
        for mentor in await ctx.session.scalars(
            select(PairingMentor).where(PairingMentor.pairing_id.in_(list(mentors)))
        ):
            mentors[mentor.pairing_id].append(mentor)
    keys = StudentKeys(ctx.crypto)
    items = []
    for pairing, student, version, wrapped in rows:
        out = pairing_out(
            keys.cipher(student.data_key_id, version, wrapped), pairing, mentors[pairing.id]
        )
        if cutoff is None or out.ends_on is None or out.ends_on >= cutoff:
            items.append(out)
    await ctx.audit(
        audit.Action.CASE_READ_EARLIER if include_earlier else audit.Action.PAIRING_LIST,
        resource_type="school",
        resource_id=school_id,
        decision=decision,
        school_id=school_id,
        detail={"count": len(items)},
    )
    return items


# -- support logs ---------------------------------------------------------------------------


async def add_support_log(
    ctx: RequestContext, case_id: uuid.UUID, data: SupportLogIn
) -> SupportLog:
    case, access = await case_access(
        ctx, Permission.SUPPORT_LOG_WRITE, case_id, resource_type="support_log"
    )
    notes = required_text("notes", data.notes)
    not_after_today("occurred_on", data.occurred_on)
    if data.follow_up_on is not None and data.follow_up_on < data.occurred_on:
        raise InvalidInput.field("follow_up_on", "must not be before occurred_on")
    await reload_open(
        ctx, access, case, audit.Action.SUPPORT_LOG_WRITE, resource_type="support_log"
    )
    log = new_support_log(
        access.cipher,
        case=case,
        author_id=ctx.principal.user_id,
        school_year=await current_school_year(ctx.session, access.school_id),
        occurred_on=data.occurred_on,
        kind=data.kind,
        notes=notes,
        follow_up_on=data.follow_up_on,
    )
    ctx.session.add(log)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.SUPPORT_LOG_WRITE,
        resource_type="support_log",
        resource_id=log.id,
        access=access,
    )
    return log


async def list_support_logs(
    ctx: RequestContext, case_id: uuid.UUID, *, include_earlier: bool = False
) -> list[SupportLogOut]:
    case, access = await case_access(
        ctx, Permission.SUPPORT_LOG_READ, case_id, resource_type="support_log"
    )
    query = select(SupportLog).where(SupportLog.case_id == case.id)
    if not include_earlier:
        query = query.where(
            SupportLog.school_year == await current_school_year(ctx.session, access.school_id)
        )
    items = sorted(
        (support_log_out(access.cipher, log) for log in await ctx.session.scalars(query)),
        key=lambda x: x.occurred_on,
        reverse=True,
    )
    await ctx.audit(
        audit.Action.CASE_READ_EARLIER if include_earlier else audit.Action.SUPPORT_LOG_READ,
        resource_type="case",
        resource_id=case.id,
        access=access,
        detail={"count": len(items)},
    )
    return items


# -- guidance -------------------------------------------------------------------------------


async def add_guidance(
    ctx: RequestContext, access: StudentAccess, case: CaseFile, text: str
) -> Guidance:
    """Counselor guidance for the student's teachers (what to do, never a score).

    The caller has decided ``guidance:write`` (or screening review) on the student and
    holds the file open (``open_or_link_case``). Audited as ``guidance:write``.
    """
    note = new_guidance(
        access.cipher,
        case=case,
        author_id=ctx.principal.user_id,
        school_year=await current_school_year(ctx.session, access.school_id),
        text=required_text("text", text),
    )
    ctx.session.add(note)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.GUIDANCE_WRITE, resource_type="guidance", resource_id=note.id, access=access
    )
    return note


async def write_guidance(ctx: RequestContext, case_id: uuid.UUID, text: str) -> Guidance:
    case, access = await case_access(
        ctx, Permission.GUIDANCE_WRITE, case_id, resource_type="guidance"
    )
    required_text("text", text)
    await reload_open(ctx, access, case, audit.Action.GUIDANCE_WRITE, resource_type="guidance")
    return await add_guidance(ctx, access, case, text)
