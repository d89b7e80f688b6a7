"""Transfers between schools: the receiving leader asks, the sending leader approves.

The request names a national ID and the class the student is to join. It is answered
``202 {id}`` whatever the ID is: registered in another school, in none, or malformed in a
way only the registry would know. The request row resolves the student and the sending
school privately, and the same work (a blind-index query, a sealed copy of the ID under a
system key, one audit event without a student) is done either way, so neither the answer
nor its timing says whether the child exists anywhere.

Only the sending school's leader sees a request that found a student of theirs, with the
student's roster fields, and decides it. The receiving school sees its own requests as
``pending`` until one is approved; a request not approved within :data:`OPEN_DAYS` shows
as ``closed`` then, declined or not, so a decline is no oracle either.

Approval moves the student (school, class, enrolment) under the same data key, so files,
categories, notes and history move untouched; the student number's blind index is
recomputed for the new school (a number taken there gets a ``-T`` suffix, and the answer
says so); pairings with the old school's mentors end. Both schools' sides are audited.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.authz import Permission
from casemgr.care import lifecycle
from casemgr.care.services import lock_student
from casemgr.context import RequestContext
from casemgr.crypto import Crypto
from casemgr.db import new_id, utcnow
from casemgr.errors import Conflict, InvalidInput
from casemgr.schools.models import School, SchoolClass
from casemgr.schoolyear import current_school_year
from casemgr.students.identity import national_id_problem, normalise_national_id
from casemgr.students.models import Student, TransferRequest
from casemgr.students.services import fields_of, seal_student

TRANSFERS_KEY_LABEL = "system:transfers"
OPEN_DAYS = 30
PENDING, APPROVED, DECLINED = "pending", "approved", "declined"
CLOSED = "closed"  # what the receiving school sees of one not approved in time
VIA = "transfer:approve"


def expires_at(request: TransferRequest) -> datetime:
    return request.requested_at + timedelta(days=OPEN_DAYS)


def is_open(request: TransferRequest, now: datetime) -> bool:
    return request.status == PENDING and now < expires_at(request)


async def _resolve(
    session: AsyncSession, crypto: Crypto, national_id: str, receiving: uuid.UUID
) -> Student | None:
    """The student of another school registered under ``national_id``, if any."""
    candidates = list(
        await session.scalars(
            select(Student).where(
                Student.national_id_bidx.in_(crypto.blind_indexes("national_id", national_id)),
                Student.school_id != receiving,
            )
        )
    )
    ciphers = await crypto.ciphers(session, [s.data_key_id for s in candidates])
    for student in candidates:
        cipher = ciphers.get(student.data_key_id)
        if cipher is not None and cipher.open_field(student, "national_id") == national_id:
            return student
    return None


async def request_transfer(
    ctx: RequestContext, *, national_id: str, to_class_id: uuid.UUID
) -> uuid.UUID:
    """``POST /api/v1/students/transfers``: the same 202 whether or not the ID exists."""
    school_class = await ctx.session.get(SchoolClass, to_class_id)
    school_id = school_class.school_id if school_class else None
    decision = await ctx.require(
        Permission.TRANSFER_REQUEST,
        resource_type="class",
        resource_id=to_class_id,
        school_id=school_id,
        exists=school_class is not None,
    )
    assert school_class is not None and school_id is not None
    wanted = normalise_national_id(national_id)
    # The shape and check digit are the caller's typing, not the registry's knowledge.
    if problem := national_id_problem(wanted):
        raise InvalidInput.field("national_id", problem)
    if school_class.school_year != await current_school_year(ctx.session, school_id):
        raise InvalidInput.field("to_class_id", "a class of the school's current school year")
    index = ctx.crypto.blind_index("national_id", wanted)
    now = utcnow()
    for earlier in await ctx.session.scalars(
        select(TransferRequest).where(
            TransferRequest.to_school_id == school_id,
            TransferRequest.national_id_bidx == index,
            TransferRequest.status == PENDING,
        )
    ):
        if is_open(earlier, now):
            cipher = await ctx.crypto.system_cipher(ctx.session, TRANSFERS_KEY_LABEL)
            if cipher.open_field(earlier, "national_id") == wanted:
                return earlier.id  # asked already: the same request, not a second one
    student = await _resolve(ctx.session, ctx.crypto, wanted, school_id)
    transfer = TransferRequest(
        id=new_id(),
        to_school_id=school_id,
        to_class_id=to_class_id,
        national_id_bidx=index,
        student_id=student.id if student else None,
        from_school_id=student.school_id if student else None,
        status=PENDING,
        requested_by=ctx.principal.user_id,
        requested_at=now,
    )
    cipher = await ctx.crypto.system_cipher(ctx.session, TRANSFERS_KEY_LABEL)
    cipher.seal_fields(transfer, national_id=wanted)
    ctx.session.add(transfer)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.TRANSFER_REQUEST,
        resource_type="transfer",
        resource_id=transfer.id,
        decision=decision,
        school_id=school_id,
    )
    return transfer.id


@dataclass(frozen=True)
class TransferItem:
    id: uuid.UUID
    direction: str  # "incoming": asks for a student of the caller's school; "outgoing"
    status: str
    requested_at: datetime
    expires_at: datetime
    to_school_id: uuid.UUID
    to_school_name: str
    to_class_id: uuid.UUID
    student: dict[str, object] | None


def _item(
    r: TransferRequest,
    names: dict[uuid.UUID, str],
    direction: str,
    status: str,
    student: dict[str, object] | None,
) -> TransferItem:
    return TransferItem(
        id=r.id,
        direction=direction,
        status=status,
        requested_at=r.requested_at,
        expires_at=expires_at(r),
        to_school_id=r.to_school_id,
        to_school_name=names.get(r.to_school_id, ""),
        to_class_id=r.to_class_id,
        student=student,
    )


async def list_transfers(ctx: RequestContext) -> list[TransferItem]:
    """Requests naming students of the caller's schools, and the caller's own requests."""
    if not ctx.may_ever(Permission.TRANSFER_READ):
        await ctx.require(Permission.TRANSFER_READ, resource_type="transfer")
    schools = ctx.authorizer.schools_holding(ctx.principal, Permission.TRANSFER_READ)
    query = select(TransferRequest).order_by(TransferRequest.requested_at.desc())
    if schools is not None:
        query = query.where(
            TransferRequest.from_school_id.in_(schools) | TransferRequest.to_school_id.in_(schools)
        )
    requests = list(await ctx.session.scalars(query))
    names = dict(
        (
            await ctx.session.execute(
                select(School.id, School.name).where(
                    School.id.in_({r.to_school_id for r in requests})
                )
            )
        ).all()
    )
    now = utcnow()
    mine = (lambda s: True) if schools is None else (lambda s: s in schools)
    incoming = [r for r in requests if r.from_school_id is not None and mine(r.from_school_id)]
    shown = {r.student_id for r in incoming if is_open(r, now) and r.student_id is not None}
    students = {
        s.id: s
        for s in await ctx.session.scalars(select(Student).where(Student.id.in_(shown)))
        if ctx.decide(
            Permission.TRANSFER_READ, school_id=s.school_id, class_id=s.class_id, student_id=s.id
        ).allowed
    }
    ciphers = await ctx.crypto.ciphers(ctx.session, [s.data_key_id for s in students.values()])
    classes = dict(
        (
            await ctx.session.execute(
                select(SchoolClass.id, SchoolClass.name).where(
                    SchoolClass.id.in_({s.class_id for s in students.values()})
                )
            )
        ).all()
    )
    items = []
    for r in requests:
        if r in incoming:
            student = students.get(r.student_id) if r.student_id and is_open(r, now) else None
            cipher = ciphers.get(student.data_key_id) if student else None
            roster = None
            if student is not None and cipher is not None:
                values = cipher.open_fields(student, "full_name", "student_no")
                roster = {
                    "id": student.id,
                    "code": student.code,
                    "full_name": values["full_name"],
                    "student_no": values["student_no"],
                    "class_id": student.class_id,
                    "class_name": classes.get(student.class_id, ""),
                }
            items.append(
                _item(
                    r,
                    names,
                    "incoming",
                    r.status if r.status != PENDING or is_open(r, now) else CLOSED,
                    roster,
                )
            )
        if mine(r.to_school_id):
            # The asking school learns nothing until approval: see the module docstring.
            if r.status == APPROVED:
                items.append(_item(r, names, "outgoing", APPROVED, {"id": r.student_id}))
            else:
                items.append(
                    _item(r, names, "outgoing", PENDING if now < expires_at(r) else CLOSED, None)
                )
    await ctx.audit(
        audit.Action.TRANSFER_LIST,
        resource_type="transfer",
        detail={"count": len(items), "students_shown": len(students)},
    )
    return items


async def _decidable(ctx: RequestContext, transfer_id: uuid.UUID) -> TransferRequest:
    """The request, if it names a student of a school whose leader is the caller (else 404)."""
    transfer = await ctx.session.get(TransferRequest, transfer_id)
    found = transfer is not None and transfer.student_id is not None
    await ctx.require(
        Permission.TRANSFER_DECIDE,
        resource_type="transfer",
        resource_id=transfer_id,
        school_id=transfer.from_school_id if transfer else None,
        exists=found,
    )
    assert transfer is not None
    if transfer.status != PENDING:
        raise Conflict(f"This request was {transfer.status} already.")
    if not is_open(transfer, utcnow()):
        raise Conflict("This request has expired; the receiving school can ask again.")
    return transfer


async def _flip(ctx: RequestContext, transfer_id: uuid.UUID, status: str) -> None:
    """Decide once: of two decisions racing, the second finds the request decided."""
    decided = await ctx.session.scalar(
        update(TransferRequest)
        .where(TransferRequest.id == transfer_id, TransferRequest.status == PENDING)
        .values(status=status, decided_by=ctx.principal.user_id, decided_at=utcnow())
        .returning(TransferRequest.id)
        .execution_options(synchronize_session=False)
    )
    if decided is None:
        raise Conflict("This request was decided already.")


async def _receiving_class(session: AsyncSession, transfer: TransferRequest) -> SchoolClass:
    """The class asked for, or its successor if the receiving school rolled over since."""
    school_class = await session.get(SchoolClass, transfer.to_class_id)
    current = await current_school_year(session, transfer.to_school_id)
    while school_class is not None and school_class.school_year != current:
        school_class = await session.scalar(
            select(SchoolClass).where(SchoolClass.previous_class_id == school_class.id)
        )
    if school_class is None:
        raise Conflict("The class asked for has no class in the current school year.")
    return school_class


async def _free_student_no(
    session: AsyncSession, crypto: Crypto, student: Student, school_id: uuid.UUID, number: str
) -> str:
    """``number``, or ``number-T``, ``number-T2``... the first free in ``school_id``."""
    for attempt in range(1, 100):
        candidate = (
            number if attempt == 1 else f"{number}-T" + ("" if attempt == 2 else str(attempt - 1))
        )
        others = list(
            await session.scalars(
                select(Student).where(
                    Student.school_id == school_id,
                    Student.id != student.id,
                    Student.student_no_bidx.in_(
                        crypto.blind_indexes("student_no", candidate, str(school_id))
                    ),
                )
            )
        )
        ciphers = await crypto.ciphers(session, [s.data_key_id for s in others])
        if not any(
            s.data_key_id in ciphers
            and ciphers[s.data_key_id].open_field(s, "student_no") == candidate
            for s in others
        ):
            return candidate
    raise Conflict("No free student number could be found in the receiving school.")


@dataclass(frozen=True)
class Approved:
    student_id: uuid.UUID
    to_class_id: uuid.UUID
    student_no_changed: bool
    pairings_ended: int


async def approve_transfer(ctx: RequestContext, transfer_id: uuid.UUID) -> Approved:
    transfer = await _decidable(ctx, transfer_id)
    assert transfer.student_id is not None and transfer.from_school_id is not None
    access = await ctx.student(
        Permission.TRANSFER_DECIDE,
        transfer.student_id,
        resource_type="transfer",
        resource_id=transfer_id,
    )
    if access.school_id != transfer.from_school_id:
        raise Conflict("The student has left this school meanwhile.")
    await _flip(ctx, transfer_id, APPROVED)
    await lock_student(ctx.session, transfer.student_id)
    target = await _receiving_class(ctx.session, transfer)
    student = access.student
    fields = fields_of(access.cipher, student)
    original = fields.student_no
    number = await _free_student_no(ctx.session, ctx.crypto, student, target.school_id, original)
    from_school = student.school_id
    student.school_id = target.school_id
    student.class_id = target.id
    student.enrolment = "enrolled"
    student.left_on = None
    # Re-sealing the number (new or not) recomputes its index in the new school's scope.
    fields = dataclasses.replace(fields, student_no=number)
    seal_student(ctx.crypto, access.cipher, student, fields, ["student_no"])
    actor = ctx.actor(access.decision, from_school)
    ended = await lifecycle.end_pairings(
        ctx.session,
        access.cipher,
        student.id,
        reason=lifecycle.TRANSFERRED,
        on=clock.today(),
        actor=actor,
        school_id=from_school,
        via=VIA,
    )
    await ctx.session.flush()
    changed = number != original
    await ctx.audit(
        audit.Action.TRANSFER_APPROVE,
        resource_type="transfer",
        resource_id=transfer_id,
        access=access,
        school_id=from_school,
        student_id=student.id,
        detail={"student_no_changed": changed, "pairings_ended": ended},
    )
    await audit.record(
        ctx.session,
        audit.Action.TRANSFER_RECEIVE,
        actor=actor,
        resource_type="transfer",
        resource_id=transfer_id,
        student_id=student.id,
        school_id=target.school_id,
        detail={"class_id": str(target.id)},
    )
    return Approved(student.id, target.id, changed, ended)


async def decline_transfer(ctx: RequestContext, transfer_id: uuid.UUID) -> None:
    transfer = await _decidable(ctx, transfer_id)
    await _flip(ctx, transfer_id, DECLINED)
    await ctx.audit(
        audit.Action.TRANSFER_DECLINE,
        resource_type="transfer",
        resource_id=transfer_id,
        school_id=transfer.from_school_id,
        student_id=transfer.student_id,
    )
