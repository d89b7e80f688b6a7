"""Screening rounds, consent, results, review, counseling notes (SPEC §3, §4, §6).

Who reaches what (``casemgr.authz``): counselors run rounds and see answers, scores and
reviews of their school; school leaders create rounds and see progress as suppressed
counts; class teachers record consent for their own classes and read the guidance a
review gives them through the case file (``casemgr.care``), never a result.

Which results are in use: a result counts (review queue, result route, case view) only
while the latest consent decision of its round is ``granted`` and it has not expired.

- **Withdrawal.** Withdrawing (or declining after granting) hides the student's results of
  that round at once, everywhere, because every view asks the latest decision. The rows
  stay sealed under the student's key until the next ``casemgr retention run``, which
  erases them; until then a new ``granted`` decision (the latest governs) shows them
  again, so a decision recorded by mistake can be corrected the same day.
- **Expiry.** ``expires_on`` (in clear, like the round's dates) is twelve months after
  administration; from that day on the result is ``expired``: out of the queue, the
  result route and the file views, and erased by retention.
"""

from __future__ import annotations

import calendar
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.accounts.models import ClassAssignment, User
from casemgr.authz import Permission
from casemgr.context import RequestContext, StudentAccess
from casemgr.crypto import FieldCipher
from casemgr.crypto.models import DataKey
from casemgr.crypto.sealed import sealed_columns
from casemgr.db import new_id
from casemgr.errors import Forbidden, InvalidInput, NotFound
from casemgr.schools.models import School, SchoolClass
from casemgr.schoolyear import current_school_year, is_school_year
from casemgr.screening.bulk import open_value
from casemgr.screening.instruments import Catalogue, Instrument, load_catalogue
from casemgr.screening.models import (
    Consent,
    CounselingNote,
    Review,
    RoundClass,
    ScreeningResult,
    ScreeningRound,
)
from casemgr.screening.schemas import (
    ConsentIn,
    CounselingNoteIn,
    CounselingNoteOut,
    QueueItem,
    ResultOut,
    ReviewIn,
    ReviewOut,
    RoundIn,
    RoundOut,
)
from casemgr.settings import Settings
from casemgr.students.models import Student
from casemgr.validation import check_text

log = logging.getLogger("casemgr.screening")

GRANTED = "granted"
PENDING_REVIEW = "pending_review"
REVIEWED = "reviewed"
EXPIRED = "expired"
# A result is in use for twelve months after administration (SPEC P3).
RESULT_MONTHS = 12
# Longest window a round may stay open.
MAX_WINDOW_DAYS = 366
# Outcomes that open or link the student's case file and carry guidance for teachers.
CASE_OUTCOMES = frozenset({"support", "urgent"})
# The reason sealed into a file that a review opened; neutral, and never a score.
CASE_REASON = "Opened by the counselor."


# -- instruments ------------------------------------------------------------------------


def load_instruments(settings: Settings) -> Catalogue:
    """The built-in instruments and the school's own (``CASEMGR_INSTRUMENTS_DIR``).

    A local definition that breaks a rule is left out and logged with its file name and
    the rule; the service keeps serving with the others.
    """
    catalogue = load_catalogue(settings.instruments_dir)
    for problem in catalogue.problems:
        log.error("instrument definition refused: %s", problem)
    return catalogue


def list_instruments(catalogue: Catalogue) -> list[dict[str, object]]:
    return [catalogue.instruments[code].describe() for code in sorted(catalogue.instruments)]


async def require_instruments(ctx: RequestContext) -> None:
    """Those who run rounds choose an instrument; nobody else needs the list."""
    if not ctx.may_ever(Permission.SCREENING_ROUND_READ):
        await ctx.require(Permission.SCREENING_ROUND_READ, resource_type="screening_instrument")


# -- dates ------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later (the month's last day when it has no such day)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def expiry_of(administered_on: date) -> date:
    """The day a result administered on ``administered_on`` is expired (P3)."""
    return add_months(administered_on, RESULT_MONTHS)


def is_expired(expires_on: date, today: date | None = None) -> bool:
    return (today or clock.today()) >= expires_on


# -- rounds -----------------------------------------------------------------------------


async def round_class_ids(session: AsyncSession, round_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        await session.scalars(
            select(RoundClass.class_id)
            .where(RoundClass.round_id == round_id)
            .order_by(RoundClass.class_id)
        )
    )


async def create_round(ctx: RequestContext, data: RoundIn, catalogue: Catalogue) -> ScreeningRound:
    school = await ctx.session.get(School, data.school_id)
    decision = await ctx.require(
        Permission.SCREENING_ROUND_CREATE,
        resource_type="school",
        resource_id=data.school_id,
        school_id=data.school_id,
        exists=school is not None,
    )
    errors: list[dict[str, str]] = []
    name = data.name.strip()
    if not name:
        errors.append({"field": "name", "message": "must not be blank"})
    if catalogue.get(data.instrument) is None:
        errors.append({"field": "instrument", "message": "no such instrument"})
    if not is_school_year(data.school_year):
        errors.append({"field": "school_year", "message": "must look like 2026-2027"})
    if data.closes_on < data.opens_on:
        errors.append({"field": "closes_on", "message": "must not be before opens_on"})
    elif (data.closes_on - data.opens_on).days > MAX_WINDOW_DAYS:
        errors.append({"field": "closes_on", "message": "a round is open for a year at most"})
    if len(set(data.class_ids)) != len(data.class_ids):
        errors.append({"field": "class_ids", "message": "a class is listed twice"})
    found = {
        c.id: c
        for c in await ctx.session.scalars(
            select(SchoolClass).where(SchoolClass.id.in_(data.class_ids))
        )
    }
    for n, class_id in enumerate(data.class_ids):
        school_class = found.get(class_id)
        if (
            school_class is None
            or school_class.school_id != data.school_id
            or school_class.school_year != data.school_year
        ):
            errors.append(
                {
                    "field": f"class_ids[{n}]",
                    "message": "no such class of this school in that school year",
                }
            )
    if errors:
        raise InvalidInput(errors)
    screening_round = ScreeningRound(
        id=new_id(),
        school_id=data.school_id,
        name=name,
        instrument=data.instrument,
        school_year=data.school_year,
        opens_on=data.opens_on,
        closes_on=data.closes_on,
        created_by=ctx.principal.user_id,
    )
    ctx.session.add(screening_round)
    await ctx.session.flush()
    ctx.session.add_all(
        RoundClass(round_id=screening_round.id, class_id=class_id) for class_id in data.class_ids
    )
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.SCREENING_ROUND_CREATE,
        resource_type="screening_round",
        resource_id=screening_round.id,
        decision=decision,
        school_id=data.school_id,
        detail={"classes": len(data.class_ids)},
    )
    return screening_round


def _consent_classes(
    ctx: RequestContext, screening_round: ScreeningRound, class_ids: Iterable[uuid.UUID]
) -> list[uuid.UUID]:
    """The round's classes in which the caller may record consent."""
    return [
        class_id
        for class_id in class_ids
        if ctx.decide(
            Permission.CONSENT_RECORD, school_id=screening_round.school_id, class_id=class_id
        ).allowed
    ]


def round_out(
    screening_round: ScreeningRound, class_ids: list[uuid.UUID], *, full: bool
) -> RoundOut:
    return RoundOut(
        id=screening_round.id,
        school_id=screening_round.school_id,
        name=screening_round.name,
        school_year=screening_round.school_year,
        class_ids=class_ids,
        opens_on=screening_round.opens_on,
        closes_on=screening_round.closes_on,
        instrument=screening_round.instrument if full else None,
    )


async def reach_round(
    ctx: RequestContext, round_id: uuid.UUID, perm: Permission = Permission.SCREENING_ROUND_READ
) -> tuple[ScreeningRound, list[uuid.UUID], bool]:
    """A round the caller reaches: ``(round, classes shown, full view)``.

    Counselors and leaders reach the rounds of their school (``perm``); a class teacher
    reaches a round that includes one of their classes, to record consent, and sees only
    those classes. Anything else is refused (403 / 404, audited).
    """
    screening_round = await ctx.session.get(ScreeningRound, round_id)
    school_id = screening_round.school_id if screening_round else None
    if screening_round is not None:
        class_ids = await round_class_ids(ctx.session, round_id)
        if ctx.decide(perm, school_id=school_id).allowed:
            return screening_round, class_ids, True
        own = _consent_classes(ctx, screening_round, class_ids)
        if own:
            return screening_round, own, False
    if perm is Permission.SCREENING_ROUND_READ and not ctx.may_ever(perm):
        # Class teachers never read rounds as such, but do reach their classes' rounds.
        perm = Permission.CONSENT_RECORD
    await ctx.require(
        perm,
        resource_type="screening_round",
        resource_id=round_id,
        school_id=school_id,
        exists=screening_round is not None,
    )
    raise NotFound("No such record.")  # pragma: no cover - require() raised


async def list_rounds(ctx: RequestContext, school_id: uuid.UUID | None = None) -> list[RoundOut]:
    """Rounds within reach, newest first (see ``reach_round``)."""
    if not (
        ctx.may_ever(Permission.SCREENING_ROUND_READ) or ctx.may_ever(Permission.CONSENT_RECORD)
    ):
        await ctx.require(Permission.SCREENING_ROUND_READ, resource_type="screening_round")
    schools = ctx.principal.school_ids
    if school_id is not None:
        schools = schools & {school_id}
    rounds = list(
        await ctx.session.scalars(
            select(ScreeningRound)
            .where(ScreeningRound.school_id.in_(schools))
            .order_by(ScreeningRound.opens_on.desc(), ScreeningRound.id)
        )
    )
    classes: dict[uuid.UUID, list[uuid.UUID]] = {r.id: [] for r in rounds}
    if rounds:
        for round_id, class_id in await ctx.session.execute(
            select(RoundClass.round_id, RoundClass.class_id)
            .where(RoundClass.round_id.in_(list(classes)))
            .order_by(RoundClass.class_id)
        ):
            classes[round_id].append(class_id)
    out = []
    for screening_round in rounds:
        if ctx.decide(Permission.SCREENING_ROUND_READ, school_id=screening_round.school_id).allowed:
            out.append(round_out(screening_round, classes[screening_round.id], full=True))
            continue
        own = _consent_classes(ctx, screening_round, classes[screening_round.id])
        if own:
            out.append(round_out(screening_round, own, full=False))
    return out


async def get_round(ctx: RequestContext, round_id: uuid.UUID) -> RoundOut:
    screening_round, class_ids, full = await reach_round(ctx, round_id)
    return round_out(screening_round, class_ids, full=full)


# -- consent ----------------------------------------------------------------------------


async def latest_consents(
    session: AsyncSession,
    round_ids: Sequence[uuid.UUID],
    student_ids: Sequence[uuid.UUID] | None = None,
) -> dict[tuple[uuid.UUID, uuid.UUID], tuple[uuid.UUID, bytes]]:
    """The governing decision of each (round, student): ``(consent id, sealed decision)``."""
    if not round_ids:
        return {}
    query = select(Consent.round_id, Consent.student_id, Consent.id, Consent.decision).where(
        Consent.round_id.in_(list(round_ids))
    )
    if student_ids is not None:
        query = query.where(Consent.student_id.in_(list(student_ids)))
    latest: dict[tuple[uuid.UUID, uuid.UUID], tuple[uuid.UUID, bytes]] = {}
    for round_id, student_id, consent_id, decision in await session.execute(
        query.order_by(Consent.recorded_at, Consent.id)
    ):
        latest[(round_id, student_id)] = (consent_id, decision)
    return latest


def decision_of(cipher: FieldCipher, consent: tuple[uuid.UUID, bytes] | None) -> str | None:
    if consent is None:
        return None
    value: str = open_value(cipher, Consent, "decision", consent[0], consent[1])
    return value


async def record_consent(ctx: RequestContext, round_id: uuid.UUID, data: ConsentIn) -> Consent:
    """A guardian's decision; the latest one (by the time it was recorded) governs."""
    _, class_ids, _ = await reach_round(ctx, round_id, Permission.CONSENT_RECORD)
    access = await ctx.student(Permission.CONSENT_RECORD, data.student_id, resource_type="consent")
    if access.emergency:
        # An emergency grant opens the student's file (SPEC P6), not the guardian's
        # screening decisions: those stay with the class's own teachers and counselors.
        await audit.record_denial(
            ctx.session,
            audit.Action.CONSENT_RECORD,
            actor=ctx.actor(access.decision, access.school_id),
            resource_type="consent",
            resource_id=data.student_id,
            student_id=data.student_id,
            school_id=access.school_id,
            emergency=True,
            purpose="emergency_access",
            detail={"status": 403},
        )
        raise Forbidden("Screening consent is not recorded under emergency access.")
    if access.student.class_id not in class_ids:
        raise InvalidInput.field("student_id", "the student is not in a class of this round")
    check_text("guardian_name", data.guardian_name)
    guardian = data.guardian_name.strip()
    if not guardian:
        raise InvalidInput.field("guardian_name", "must not be blank")
    if data.recorded_on > clock.today():
        raise InvalidInput.field("recorded_on", "must not be in the future")
    # Strictly after the previous decision, so that "latest" is never a tie.
    previous = await ctx.session.scalar(
        select(func.max(Consent.recorded_at)).where(
            Consent.round_id == round_id, Consent.student_id == access.id
        )
    )
    now = clock.now()
    if previous is not None and now <= previous:
        now = previous + timedelta(microseconds=1)
    consent = Consent(
        id=new_id(),
        round_id=round_id,
        student_id=access.id,
        recorded_by=ctx.principal.user_id,
        recorded_at=now,
    )
    access.cipher.seal_fields(
        consent, decision=data.decision, guardian_name=guardian, recorded_on=data.recorded_on
    )
    ctx.session.add(consent)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.CONSENT_RECORD,
        resource_type="consent",
        resource_id=consent.id,
        access=access,
    )
    return consent


async def list_consents(ctx: RequestContext, round_id: uuid.UUID) -> list[dict[str, Any]]:
    """The governing decision of each student of the round the caller may record for."""
    screening_round, class_ids, _ = await reach_round(ctx, round_id, Permission.CONSENT_RECORD)
    rows = (
        await ctx.session.execute(
            select(
                Student.id,
                Student.class_id,
                Student.data_key_id,
                DataKey.kek_version,
                DataKey.wrapped,
            )
            .join(DataKey, DataKey.id == Student.data_key_id)
            .where(Student.class_id.in_(class_ids), DataKey.wrapped.is_not(None))
        )
    ).all()
    reachable = {
        r.id: r
        for r in rows
        if ctx.decide(
            Permission.CONSENT_RECORD,
            school_id=screening_round.school_id,
            class_id=r.class_id,
            student_id=r.id,
        ).allowed
    }
    records = list(
        await ctx.session.scalars(
            select(Consent)
            .where(Consent.round_id == round_id, Consent.student_id.in_(list(reachable)))
            .order_by(Consent.recorded_at, Consent.id)
        )
    )
    latest = {c.student_id: c for c in records}
    items = []
    for student_id, consent in latest.items():
        row = reachable[student_id]
        cipher = ctx.crypto.open_data_key(row.data_key_id, row.kek_version, row.wrapped)
        values = cipher.open_fields(consent, "decision", "guardian_name", "recorded_on")
        items.append(
            {
                "student_id": student_id,
                "decision": values["decision"],
                "guardian_name": values["guardian_name"],
                "recorded_on": values["recorded_on"],
                "recorded_at": consent.recorded_at,
            }
        )
    await ctx.audit(
        audit.Action.CONSENT_READ,
        resource_type="screening_round",
        resource_id=round_id,
        school_id=screening_round.school_id,
        detail={"count": len(items)},
    )
    return sorted(items, key=lambda item: str(item["student_id"]))


# -- results ----------------------------------------------------------------------------


def band_rank(instrument: Instrument | None, band: str) -> Fraction:
    """How severe a total band is: its place among the instrument's total bands, from 0
    (the lowest) to 1 (the highest), so that instruments with more bands compare fairly."""
    if instrument is None:
        return Fraction(0)
    names = [b.band for b in instrument.total.bands]
    if band not in names or len(names) < 2:
        return Fraction(0)
    return Fraction(names.index(band), len(names) - 1)


def scale_bands_of(
    instrument: Instrument | None, scales: dict[str, int | None]
) -> dict[str, str | None]:
    if instrument is None:
        return {}
    bands: dict[str, str | None] = {}
    for scale in instrument.scales:
        score = scales.get(scale.name)
        bands[scale.name] = (
            None
            if score is None
            else next((b.band for b in scale.bands if score <= b.max), scale.bands[-1].band)
        )
    return bands


async def _result_access(
    ctx: RequestContext, result_id: uuid.UUID, perm: Permission
) -> tuple[ScreeningResult, ScreeningRound, StudentAccess]:
    """A result in use that the caller may act on, with the student's cipher.

    A result that does not exist, is out of reach, expired or hidden by a withdrawn
    consent is "not found" alike (audited as a denial).
    """
    result = await ctx.session.get(ScreeningResult, result_id)
    if result is None:
        await ctx.require(
            perm, resource_type="screening_result", resource_id=result_id, exists=False
        )
    assert result is not None
    access = await ctx.student(
        perm, result.student_id, resource_type="screening_result", resource_id=result_id
    )
    screening_round = await ctx.session.get(ScreeningRound, result.round_id)
    assert screening_round is not None
    consent = (await latest_consents(ctx.session, [result.round_id], [result.student_id])).get(
        (result.round_id, result.student_id)
    )
    if is_expired(result.expires_on) or decision_of(access.cipher, consent) != GRANTED:
        await audit.record_denial(
            ctx.session,
            perm.value,
            actor=ctx.actor(access.decision, access.school_id),
            resource_type="screening_result",
            resource_id=result_id,
            student_id=access.id,
            school_id=access.school_id,
            detail={"status": 404},
        )
        raise NotFound("No such record.")
    return result, screening_round, access


def result_out(
    cipher: FieldCipher, result: ScreeningResult, instrument_code: str, catalogue: Catalogue
) -> ResultOut:
    values = cipher.open_fields(result)
    review: Review | None = values["review"]
    return ResultOut(
        id=result.id,
        student_id=result.student_id,
        round_id=result.round_id,
        instrument=instrument_code,
        administered_on=values["administered_on"],
        expires_on=result.expires_on,
        answers=values["answers"],
        total=values["total"],
        band=values["band"],
        scales=values["scales"],
        scale_bands=scale_bands_of(catalogue.get(instrument_code), values["scales"]),
        flags=values["flags"],
        status=EXPIRED if is_expired(result.expires_on) else values["status"],
        review=None
        if review is None
        else ReviewOut(
            outcome=review.outcome,
            notes=review.notes,
            reviewed_by=review.reviewed_by,
            reviewed_at=review.reviewed_at,
            guidance_for_teachers=review.guidance_for_teachers,
            recheck_on=review.recheck_on,
            case_id=review.case_id,
        ),
    )


async def get_result(ctx: RequestContext, result_id: uuid.UUID, catalogue: Catalogue) -> ResultOut:
    result, screening_round, access = await _result_access(
        ctx, result_id, Permission.SCREENING_RESULT_READ
    )
    out = result_out(access.cipher, result, screening_round.instrument, catalogue)
    await ctx.audit(
        audit.Action.SCREENING_RESULT_READ,
        resource_type="screening_result",
        resource_id=result_id,
        access=access,
    )
    return out


_RESULT = ScreeningResult.__table__.c


async def _results_in_use(
    ctx: RequestContext,
    perm: Permission,
    *,
    school_ids: Iterable[uuid.UUID] | None = None,
    student_id: uuid.UUID | None = None,
    include_all: bool = False,
) -> list[tuple[Any, FieldCipher, str | None]]:
    """Result rows (every column, sealed ones as ciphertext, plus the round's instrument)
    within reach, each with the student's cipher and the governing consent decision.

    Results that expired or lost their consent are left out unless ``include_all`` (an
    export shows what is held). Each student's key is unwrapped once.
    """
    query = (
        select(
            *_RESULT,
            ScreeningRound.instrument,
            Student.school_id,
            Student.class_id,
            Student.data_key_id,
            DataKey.kek_version,
            DataKey.wrapped,
        )
        .join(ScreeningRound, ScreeningRound.id == ScreeningResult.round_id)
        .join(Student, Student.id == ScreeningResult.student_id)
        .join(DataKey, DataKey.id == Student.data_key_id)
        .where(DataKey.wrapped.is_not(None))
    )
    if school_ids is not None:
        query = query.where(Student.school_id.in_(list(school_ids)))
    if student_id is not None:
        query = query.where(ScreeningResult.student_id == student_id)
    if not include_all:
        query = query.where(ScreeningResult.expires_on > clock.today())
    rows = [
        r
        for r in (await ctx.session.execute(query)).all()
        if ctx.decide(
            perm, school_id=r.school_id, class_id=r.class_id, student_id=r.student_id
        ).allowed
    ]
    consents = await latest_consents(
        ctx.session,
        sorted({r.round_id for r in rows}),
        [student_id] if student_id is not None else None,
    )
    ciphers: dict[uuid.UUID, FieldCipher] = {}
    out = []
    for r in rows:
        cipher = ciphers.get(r.data_key_id)
        if cipher is None:
            cipher = ctx.crypto.open_data_key(r.data_key_id, r.kek_version, r.wrapped)
            ciphers[r.data_key_id] = cipher
        decision = decision_of(cipher, consents.get((r.round_id, r.student_id)))
        if include_all or decision == GRANTED:
            out.append((r, cipher, decision))
    return out


def open_result_row(cipher: FieldCipher, row: Any, *columns: str) -> dict[str, Any]:
    """Sealed columns of a result row from ``_results_in_use`` (all when none named)."""
    names = columns or tuple(sealed_columns(ScreeningResult))
    return {
        name: open_value(cipher, ScreeningResult, name, row.id, getattr(row, name))
        for name in names
    }


async def review_queue(ctx: RequestContext, catalogue: Catalogue) -> list[QueueItem]:
    """Results waiting for a counselor: critical flags first, then the most severe band
    (its place in the instrument's total bands, ``band_rank``), then the highest total,
    then the oldest."""
    if not ctx.may_ever(Permission.SCREENING_RESULT_READ):
        await ctx.require(Permission.SCREENING_RESULT_READ, resource_type="screening_result")
    schools = [
        s
        for s in ctx.principal.school_ids
        if ctx.decide(Permission.SCREENING_RESULT_READ, school_id=s).allowed
    ]
    items: list[tuple[tuple[Any, ...], QueueItem]] = []
    for row, cipher, _ in await _results_in_use(
        ctx, Permission.SCREENING_RESULT_READ, school_ids=schools
    ):
        if open_value(cipher, ScreeningResult, "status", row.id, row.status) != PENDING_REVIEW:
            continue
        values = open_result_row(cipher, row, "band", "flags", "total", "administered_on")
        band, flags, total = values["band"], values["flags"], values["total"]
        key = (
            not flags,
            -band_rank(catalogue.get(row.instrument), band),
            -(total or 0),
            values["administered_on"],
            str(row.id),
        )
        items.append(
            (
                key,
                QueueItem(
                    result_id=row.id,
                    student_id=row.student_id,
                    round_id=row.round_id,
                    instrument=row.instrument,
                    band=band,
                    total=total,
                    flags=flags,
                    status=PENDING_REVIEW,
                    administered_on=values["administered_on"],
                ),
            )
        )
    items.sort(key=lambda pair: pair[0])
    await ctx.audit(
        audit.Action.SCREENING_QUEUE_READ,
        resource_type="screening_result",
        school_id=schools[0] if len(schools) == 1 else None,
        detail={"count": len(items)},
    )
    return [item for _, item in items]


# -- review -----------------------------------------------------------------------------


def _check_review(data: ReviewIn) -> tuple[str, str | None]:
    errors = []
    notes = data.notes.strip()
    if not notes:
        errors.append({"field": "notes", "message": "must not be blank"})
    guidance = data.guidance_for_teachers.strip() if data.guidance_for_teachers else None
    if guidance and data.outcome not in CASE_OUTCOMES:
        errors.append(
            {
                "field": "guidance_for_teachers",
                "message": "only with outcome support or urgent, which open the case file"
                " where teachers read it",
            }
        )
    if data.outcome == "monitor" and data.recheck_on is None:
        errors.append({"field": "recheck_on", "message": "a monitor outcome needs a re-check date"})
    if data.recheck_on is not None and data.recheck_on <= clock.today():
        errors.append({"field": "recheck_on", "message": "must be after today"})
    if errors:
        raise InvalidInput(errors)
    return notes, guidance or None


async def class_teachers_of(session: AsyncSession, class_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        await session.scalars(
            select(ClassAssignment.user_id)
            .join(User, User.id == ClassAssignment.user_id)
            .where(ClassAssignment.class_id == class_id, User.is_active.is_(True))
            .order_by(ClassAssignment.user_id)
        )
    )


async def review_result(
    ctx: RequestContext, result_id: uuid.UUID, data: ReviewIn
) -> tuple[ScreeningResult, uuid.UUID | None]:
    """Record a counselor's review; ``support`` and ``urgent`` open or link the case file
    and give the class teacher the guidance text only (``casemgr.care``)."""
    from casemgr.care.services import add_guidance, open_or_link_case
    from casemgr.care.tasks import add_task

    result, _, access = await _result_access(ctx, result_id, Permission.SCREENING_RESULT_REVIEW)
    notes, guidance = _check_review(data)
    case_id = None
    today = clock.today()
    if data.outcome in CASE_OUTCOMES:
        case, _ = await open_or_link_case(ctx, access, CASE_REASON)
        case_id = case.id
        if guidance:
            await add_guidance(ctx, access, case, guidance)
        if data.outcome == "urgent":
            for teacher_id in await class_teachers_of(ctx.session, access.student.class_id):
                await add_task(
                    ctx,
                    access,
                    assignee_id=teacher_id,
                    kind=URGENT_TASK,
                    due_on=today,
                    note=URGENT_NOTE,
                    case_id=case_id,
                )
    if data.recheck_on is not None:
        await add_task(
            ctx,
            access,
            assignee_id=ctx.principal.user_id,
            kind=RECHECK_TASK,
            due_on=data.recheck_on,
            case_id=case_id,
        )
    access.cipher.seal_fields(
        result,
        review=Review(
            outcome=data.outcome,
            notes=notes,
            reviewed_by=ctx.principal.user_id,
            reviewed_at=clock.now(),
            guidance_for_teachers=guidance,
            recheck_on=data.recheck_on,
            case_id=case_id,
        ),
        status=REVIEWED,
    )
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.SCREENING_RESULT_REVIEW,
        resource_type="screening_result",
        resource_id=result_id,
        access=access,
    )
    return result, case_id


# Task kinds (``casemgr.care.tasks.TASK_KINDS``; sealed, shown to their assignee only).
RECHECK_TASK = "screening_recheck"
URGENT_TASK = "urgent_review"
# The note of a class teacher's urgent task: where to look, never why.
URGENT_NOTE = "Please read the counselor's guidance in the student's file today."


# -- counseling notes -----------------------------------------------------------------


async def add_counseling_note(
    ctx: RequestContext, student_id: uuid.UUID, data: CounselingNoteIn
) -> CounselingNote:
    access = await ctx.student(
        Permission.COUNSELING_NOTE_WRITE, student_id, resource_type="counseling_note"
    )
    text = data.notes.strip()
    if not text:
        raise InvalidInput.field("notes", "must not be blank")
    if data.result_id is not None:
        owner = await ctx.session.scalar(
            select(ScreeningResult.student_id).where(ScreeningResult.id == data.result_id)
        )
        if owner != access.id:
            raise InvalidInput.field("result_id", "no such result of this student")
    from casemgr.care.services import open_case_of

    case = await open_case_of(ctx.session, access.cipher, access.id)
    note = CounselingNote(
        id=new_id(),
        student_id=access.id,
        case_id=case.id if case is not None else None,
        result_id=data.result_id,
        author_id=ctx.principal.user_id,
        school_year=await current_school_year(ctx.session, access.school_id),
        created_at=clock.now(),
    )
    access.cipher.seal_fields(note, text=text)
    ctx.session.add(note)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.COUNSELING_NOTE_WRITE,
        resource_type="counseling_note",
        resource_id=note.id,
        access=access,
    )
    return note


def note_out(cipher: FieldCipher, note: CounselingNote) -> CounselingNoteOut:
    return CounselingNoteOut(
        id=note.id,
        student_id=note.student_id,
        author_id=note.author_id,
        school_year=note.school_year,
        created_at=note.created_at,
        notes=cipher.open_field(note, "text"),
        result_id=note.result_id,
    )


async def counseling_notes(
    ctx: RequestContext, student_id: uuid.UUID, school_year: str | None = None
) -> tuple[list[CounselingNoteOut], str]:
    """The student's notes of the current school year, or of ``school_year`` when asked
    (an earlier year is an explicit, audited request: SPEC P3 "clean slate")."""
    access = await ctx.student(
        Permission.COUNSELING_NOTE_READ, student_id, resource_type="counseling_note"
    )
    current = await current_school_year(ctx.session, access.school_id)
    if school_year is not None and not is_school_year(school_year):
        raise InvalidInput.field("school_year", "must look like 2026-2027")
    year = school_year or current
    notes = [
        note_out(access.cipher, n)
        for n in await ctx.session.scalars(
            select(CounselingNote)
            .where(CounselingNote.student_id == access.id, CounselingNote.school_year == year)
            .order_by(CounselingNote.created_at.desc(), CounselingNote.id)
        )
    ]
    await ctx.audit(
        audit.Action.COUNSELING_NOTE_READ,
        resource_type="counseling_note",
        access=access,
        detail={"count": len(notes), "earlier": year != current},
    )
    return notes, year


# -- what other features show -----------------------------------------------------------


def _summary(row: Any, values: dict[str, Any]) -> dict[str, Any]:
    review: Review | None = values["review"]
    return {
        "id": row.id,
        "round_id": row.round_id,
        "instrument": row.instrument,
        "administered_on": values["administered_on"],
        "expires_on": row.expires_on,
        "total": values["total"],
        "band": values["band"],
        "flags": values["flags"],
        "status": EXPIRED if is_expired(row.expires_on) else values["status"],
        "review_outcome": review.outcome if review else None,
    }


def _may_read_results(ctx: RequestContext, access: StudentAccess) -> bool:
    return ctx.decide(
        Permission.SCREENING_RESULT_READ,
        school_id=access.school_id,
        class_id=access.student.class_id,
        student_id=access.id,
    ).allowed


async def screening_for_case(
    ctx: RequestContext, access: StudentAccess
) -> list[dict[str, Any]] | None:
    """The ``screening`` key of a case view: the student's results in use, newest first.

    None (leave the key out) unless the caller may read screening results of this student
    (counselors); never for teachers, leaders, admins or auditors, nor under an emergency
    grant (which reaches what a class teacher may). The case read's own audit event
    covers this read.
    """
    if not _may_read_results(ctx, access):
        return None
    items = [
        _summary(row, open_result_row(cipher, row))
        for row, cipher, _ in await _results_in_use(
            ctx, Permission.SCREENING_RESULT_READ, student_id=access.id
        )
    ]
    return sorted(items, key=lambda item: (item["administered_on"], str(item["id"])), reverse=True)


async def screening_for_export(ctx: RequestContext, access: StudentAccess) -> dict[str, Any] | None:
    """The ``screening`` part of a student's export (PIPL Art. 45: what is held).

    None unless the caller may read screening results (counselors). Everything still
    held is listed, expired results and those whose consent was withdrawn included (with
    ``consent`` saying so) until retention erases them; answers, scores, reviews, consent
    decisions and counseling notes of every school year.
    """
    if not _may_read_results(ctx, access):
        return None
    cipher = access.cipher
    results = []
    for row, row_cipher, decision in await _results_in_use(
        ctx, Permission.SCREENING_RESULT_READ, student_id=access.id, include_all=True
    ):
        values = open_result_row(row_cipher, row)
        item = _summary(row, values)
        review: Review | None = values["review"]
        item.update(
            answers=values["answers"],
            scales=values["scales"],
            consent=decision,
            review=None if review is None else _review_dict(review),
        )
        results.append(item)
    consents = [
        {
            "round_id": c.round_id,
            "recorded_at": c.recorded_at,
            **cipher.open_fields(c, "decision", "guardian_name", "recorded_on"),
        }
        for c in await ctx.session.scalars(
            select(Consent)
            .where(Consent.student_id == access.id)
            .order_by(Consent.recorded_at, Consent.id)
        )
    ]
    notes = [
        note_out(cipher, n)
        for n in await ctx.session.scalars(
            select(CounselingNote)
            .where(CounselingNote.student_id == access.id)
            .order_by(CounselingNote.created_at, CounselingNote.id)
        )
    ]
    return {
        "results": sorted(results, key=lambda item: (item["administered_on"], str(item["id"]))),
        "consents": consents,
        "counseling_notes": notes,
    }


def _review_dict(review: Review) -> dict[str, Any]:
    return {
        "outcome": review.outcome,
        "notes": review.notes,
        "reviewed_by": review.reviewed_by,
        "reviewed_at": review.reviewed_at,
        "guidance_for_teachers": review.guidance_for_teachers,
        "recheck_on": review.recheck_on,
        "case_id": review.case_id,
    }


__all__ = [
    "CASE_OUTCOMES",
    "add_counseling_note",
    "add_months",
    "counseling_notes",
    "create_round",
    "expiry_of",
    "get_result",
    "get_round",
    "is_expired",
    "list_rounds",
    "load_instruments",
    "record_consent",
    "review_queue",
    "review_result",
    "screening_for_case",
    "screening_for_export",
]
