"""Students: create, read, edit, roster and exact lookup, each authorized, sealed and audited."""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import date

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.authz import Permission
from casemgr.context import RequestContext, StudentAccess
from casemgr.crypto import Crypto, FieldCipher
from casemgr.crypto.envelope import BLIND_INDEX_BYTES
from casemgr.crypto.models import DataKey
from casemgr.db import new_id
from casemgr.errors import Conflict, InvalidInput
from casemgr.schools.models import SchoolClass
from casemgr.students.identity import (
    national_id_problem,
    normalise_national_id,
    normalise_student_no,
)
from casemgr.students.models import Student
from casemgr.students.schemas import (
    Guardian,
    GuardianIn,
    RosterEntry,
    StudentIn,
    StudentOut,
    StudentPatch,
)

# Unambiguous characters only (no 0/O, 1/I/L, U): codes are read aloud and typed on phones.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
TRANSFERS_ROUTE = "/api/v1/students/transfers"


class DuplicateStudent(Conflict):
    """A student number or national ID that is registered already.

    One answer for both fields and for every place the other record may be, so the answer
    says nothing of where (or, for a school of its own, whether) a child is enrolled; it
    points to the transfer process instead.
    """

    def __init__(self) -> None:
        super().__init__(
            "This student cannot be registered as new: the student number or national ID is"
            " registered already. If the student is joining from another school, the school"
            " leader asks for a transfer.",
            transfer=TRANSFERS_ROUTE,
        )


def new_student_code() -> str:
    """A random neutral code: nothing in it depends on class, category or date."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def student_no_index(crypto: Crypto, school_id: uuid.UUID, student_no: str) -> bytes:
    return crypto.blind_index("student_no", student_no, str(school_id))


def national_id_index(crypto: Crypto, national_id: str) -> bytes:
    return crypto.blind_index("national_id", national_id)


@dataclass(frozen=True)
class StudentFields:
    """A student's personal details, validated and normalised, ready to seal."""

    full_name: str
    gender: str
    birth_date: date
    student_no: str
    national_id: str | None
    address: str | None
    guardians: list[Guardian]

    def sealed_values(self) -> dict[str, object]:
        return {
            "full_name": self.full_name,
            "gender": self.gender,
            "birth_date": self.birth_date,
            "student_no": self.student_no,
            "national_id": self.national_id,
            "address": self.address,
            "guardians": self.guardians,
        }


def validate(data: StudentIn, today: date | None = None) -> StudentFields:
    """The rules of ``POST /api/v1/students`` (the roster import applies them too)."""
    errors = []
    student_no = normalise_student_no(data.student_no)
    if not student_no:
        errors.append({"field": "student_no", "message": "must not be blank"})
    full_name = data.full_name.strip()
    if not full_name:
        errors.append({"field": "full_name", "message": "must not be blank"})
    if data.birth_date > (today or date.today()):
        errors.append({"field": "birth_date", "message": "must not be in the future"})
    national_id = None
    if data.national_id is not None and data.national_id.strip():
        national_id = normalise_national_id(data.national_id)
        problem = national_id_problem(national_id, data.birth_date)
        if problem:
            errors.append({"field": "national_id", "message": problem})
    guardians = [
        Guardian(g.name.strip(), g.relation.strip(), g.phone.strip()) for g in data.guardians or []
    ]
    for n, guardian in enumerate(guardians):
        for name in ("name", "relation", "phone"):
            if not getattr(guardian, name):
                errors.append({"field": f"guardians[{n}].{name}", "message": "must not be blank"})
    if errors:
        raise InvalidInput(errors)
    address = data.address.strip() if data.address else None
    return StudentFields(
        full_name=full_name,
        gender=data.gender,
        birth_date=data.birth_date,
        student_no=student_no,
        national_id=national_id,
        address=address or None,
        guardians=guardians,
    )


def seal_student(
    crypto: Crypto, cipher: FieldCipher, student: Student, fields: StudentFields, columns: list[str]
) -> None:
    """Seal ``columns`` of ``fields`` into ``student`` and keep its blind indexes in step."""
    values = fields.sealed_values()
    cipher.seal_fields(student, **{column: values[column] for column in columns})
    if "student_no" in columns:
        student.student_no_bidx = student_no_index(crypto, student.school_id, fields.student_no)
    if "national_id" in columns:
        # An absent ID gets a random index: no NULL says who has none, and it never matches.
        student.national_id_bidx = (
            os.urandom(BLIND_INDEX_BYTES)
            if fields.national_id is None
            else national_id_index(crypto, fields.national_id)
        )
    student.bidx_version = crypto.keyring.blind_index_version


async def _ciphers_of(
    session: AsyncSession, crypto: Crypto, students: list[Student]
) -> dict[uuid.UUID, FieldCipher]:
    return await crypto.ciphers(session, [s.data_key_id for s in students])


async def confirm_unique(
    session: AsyncSession,
    crypto: Crypto,
    school_id: uuid.UUID,
    student_no: str,
    national_id: str | None,
    *,
    exclude_id: uuid.UUID | None = None,
) -> None:
    """Raise ``DuplicateStudent`` when either number is registered to another student.

    Blind indexes are truncated, so an index hit is confirmed by decrypting first. This
    is a system check across the county: the values opened here never leave it.
    """
    exclude = Student.id != exclude_id if exclude_id else Student.id.is_not(None)
    candidates = list(
        await session.scalars(
            select(Student).where(
                Student.school_id == school_id,
                Student.student_no_bidx.in_(
                    crypto.blind_indexes("student_no", student_no, str(school_id))
                ),
                exclude,
            )
        )
    )
    if national_id is not None:
        candidates += await session.scalars(
            select(Student).where(
                Student.national_id_bidx.in_(crypto.blind_indexes("national_id", national_id)),
                exclude,
            )
        )
    ciphers = await _ciphers_of(session, crypto, candidates)
    for other in candidates:
        cipher = ciphers.get(other.data_key_id)
        if cipher is None:  # erased: its numbers are free again
            continue
        if (
            other.school_id == school_id and cipher.open_field(other, "student_no") == student_no
        ) or (national_id is not None and cipher.open_field(other, "national_id") == national_id):
            raise DuplicateStudent()


async def insert_student(
    session: AsyncSession,
    crypto: Crypto,
    school_class: SchoolClass,
    data: StudentIn | StudentFields,
    *,
    actor: audit.Actor | None,
) -> Student:
    """Create a student without an authorization check (callers decide; CLI, demo, import)."""
    fields = data if isinstance(data, StudentFields) else validate(data)
    await confirm_unique(
        session, crypto, school_class.school_id, fields.student_no, fields.national_id
    )
    cipher = crypto.new_data_key(session, "student")
    student = Student(
        id=new_id(),
        school_id=school_class.school_id,
        class_id=school_class.id,
        code=new_student_code(),
        data_key_id=cipher.key_id,
    )
    seal_student(crypto, cipher, student, fields, list(fields.sealed_values()))
    session.add(student)
    await session.flush()
    await audit.record(
        session,
        audit.Action.STUDENT_CREATE,
        actor=actor,
        resource_type="student",
        resource_id=student.id,
        student_id=student.id,
        school_id=school_class.school_id,
    )
    return student


async def _refuse_duplicate(ctx: RequestContext, action: str, school_id: uuid.UUID) -> None:
    """Leave the refused attempt in the trail (its own transaction), then answer 409."""
    await audit.record_denial(
        ctx.session,
        action,
        actor=ctx.actor(school_id=school_id),
        resource_type="student",
        school_id=school_id,
        detail={"status": 409, "reason": "duplicate"},
    )
    raise DuplicateStudent()


async def create_student(ctx: RequestContext, data: StudentIn) -> Student:
    school_class = await ctx.session.get(SchoolClass, data.class_id)
    decision = await ctx.require(
        Permission.STUDENT_CREATE,
        resource_type="class",
        resource_id=data.class_id,
        school_id=school_class.school_id if school_class else None,
        class_id=data.class_id,
        exists=school_class is not None,
    )
    assert school_class is not None
    fields = validate(data)
    try:
        return await insert_student(
            ctx.session,
            ctx.crypto,
            school_class,
            fields,
            actor=ctx.actor(decision, school_class.school_id),
        )
    except DuplicateStudent:
        await _refuse_duplicate(ctx, audit.Action.STUDENT_CREATE, school_class.school_id)
        raise


def fields_of(cipher: FieldCipher, student: Student) -> StudentFields:
    values = cipher.open_fields(student)
    return StudentFields(
        full_name=values["full_name"],
        gender=values["gender"],
        birth_date=values["birth_date"],
        student_no=values["student_no"],
        national_id=values["national_id"],
        address=values["address"],
        guardians=values["guardians"] or [],
    )


def details(cipher: FieldCipher, student: Student) -> StudentOut:
    fields = fields_of(cipher, student)
    return StudentOut(
        id=student.id,
        code=student.code,
        school_id=student.school_id,
        class_id=student.class_id,
        full_name=fields.full_name,
        gender=fields.gender,
        birth_date=fields.birth_date,
        student_no=fields.student_no,
        national_id=fields.national_id,
        address=fields.address,
        guardians=fields.guardians,
    )


async def get_student(ctx: RequestContext, student_id: uuid.UUID) -> StudentOut:
    access = await ctx.student(Permission.STUDENT_READ, student_id)
    out = details(access.cipher, access.student)
    await ctx.audit(
        audit.Action.STUDENT_READ, resource_type="student", resource_id=student_id, access=access
    )
    return out


def _merge(current: StudentFields, class_id: uuid.UUID, patch: StudentPatch) -> StudentIn:
    def pick(name: str, value: object) -> object:
        changed = getattr(patch, name)
        return value if changed is msgspec.UNSET else changed

    guardians = (
        [GuardianIn(g.name, g.relation, g.phone) for g in current.guardians]
        if patch.guardians is msgspec.UNSET
        else patch.guardians
    )
    return StudentIn(
        class_id=class_id,
        full_name=pick("full_name", current.full_name),  # type: ignore[arg-type]
        gender=pick("gender", current.gender),  # type: ignore[arg-type]
        birth_date=pick("birth_date", current.birth_date),  # type: ignore[arg-type]
        student_no=pick("student_no", current.student_no),  # type: ignore[arg-type]
        national_id=pick("national_id", current.national_id),  # type: ignore[arg-type]
        address=pick("address", current.address),  # type: ignore[arg-type]
        guardians=guardians,
    )


async def update_student(
    ctx: RequestContext, student_id: uuid.UUID, patch: StudentPatch
) -> StudentOut:
    """Change personal details or move the student to another class of the same school."""
    access = await ctx.student(Permission.STUDENT_UPDATE, student_id)
    student = access.student
    target_class_id = student.class_id if patch.class_id is msgspec.UNSET else patch.class_id
    if target_class_id != student.class_id:
        target = await ctx.session.get(SchoolClass, target_class_id)
        if target is None or target.school_id != student.school_id:
            raise InvalidInput.field("class_id", "no such class in this student's school")
        # Moving needs reach over the class the student goes to, as well as the one left.
        await ctx.require(
            Permission.STUDENT_UPDATE,
            resource_type="class",
            resource_id=target.id,
            school_id=target.school_id,
            class_id=target.id,
            student_id=student_id,
        )

    current = fields_of(access.cipher, student)
    fields = validate(_merge(current, target_class_id, patch))
    try:
        await confirm_unique(
            ctx.session,
            ctx.crypto,
            student.school_id,
            fields.student_no,
            fields.national_id,
            exclude_id=student.id,
        )
    except DuplicateStudent:
        await _refuse_duplicate(ctx, audit.Action.STUDENT_UPDATE, student.school_id)
        raise
    before, after = current.sealed_values(), fields.sealed_values()
    changed = [column for column in after if after[column] != before[column]]
    seal_student(ctx.crypto, access.cipher, student, fields, changed)
    if target_class_id != student.class_id:
        student.class_id = target_class_id
        changed.append("class_id")
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.STUDENT_UPDATE,
        resource_type="student",
        resource_id=student.id,
        access=access,
        detail={"fields": changed},
    )
    return details(access.cipher, student)


def roster_entry(cipher: FieldCipher, student: Student) -> RosterEntry:
    values = cipher.open_fields(student, "full_name", "student_no")
    return RosterEntry(
        id=student.id,
        code=student.code,
        full_name=values["full_name"],
        student_no=values["student_no"],
    )


async def roster(ctx: RequestContext, class_id: uuid.UUID) -> list[RosterEntry]:
    """A class list with the same fields for every student (SPEC P3).

    Whole-class reach (class teacher, counselor, leader) lists everyone; a mentor sees the
    students they are paired with; a class with nobody in reach is "not found".
    """
    school_class = await ctx.session.get(SchoolClass, class_id)
    school_id = school_class.school_id if school_class else None
    decision = ctx.decide(Permission.ROSTER_READ, school_id=school_id, class_id=class_id)
    rows = (
        (
            await ctx.session.execute(
                select(Student, DataKey.kek_version, DataKey.wrapped)
                .join(DataKey, DataKey.id == Student.data_key_id)
                .where(Student.class_id == class_id, DataKey.wrapped.is_not(None))
            )
        ).all()
        if school_class is not None
        else []
    )
    visible = [
        row
        for row in rows
        if decision.allowed
        or ctx.decide(
            Permission.ROSTER_READ,
            school_id=row[0].school_id,
            class_id=row[0].class_id,
            student_id=row[0].id,
        ).allowed
    ]
    if school_class is None or not (decision.allowed or visible):
        await ctx.require(
            Permission.ROSTER_READ,
            resource_type="class",
            resource_id=class_id,
            school_id=school_id,
            class_id=class_id,
            exists=school_class is not None,
        )
    entries = sorted(
        (
            roster_entry(ctx.crypto.open_data_key(s.data_key_id, version, wrapped), s)
            for s, version, wrapped in visible
        ),
        key=lambda e: (e.student_no, e.code),
    )
    await ctx.audit(
        audit.Action.ROSTER_READ,
        resource_type="class",
        resource_id=class_id,
        decision=decision if decision.allowed else None,
        school_id=school_id,
        detail={"count": len(entries)},
    )
    return entries


async def lookup(
    ctx: RequestContext, *, student_no: str | None = None, national_id: str | None = None
) -> list[RosterEntry]:
    """Exact lookup through blind indexes, limited to the caller's reach."""
    if (student_no is None) == (national_id is None):
        raise InvalidInput.field("student_no", "give exactly one of student_no or national_id")
    if not ctx.may_ever(Permission.STUDENT_LOOKUP):
        await ctx.require(Permission.STUDENT_LOOKUP, resource_type="student")
    crypto = ctx.crypto
    if student_no is not None:
        wanted = normalise_student_no(student_no)
        schools = ctx.principal.school_ids
        indexes = [
            index
            for school_id in schools
            for index in crypto.blind_indexes("student_no", wanted, str(school_id))
        ]
        query = select(Student).where(
            Student.student_no_bidx.in_(indexes), Student.school_id.in_(schools)
        )
        column = "student_no"
    else:
        assert national_id is not None
        wanted = normalise_national_id(national_id)
        query = select(Student).where(
            Student.national_id_bidx.in_(crypto.blind_indexes("national_id", wanted))
        )
        column = "national_id"
    candidates = [
        s
        for s in await ctx.session.scalars(query)
        if ctx.decide(
            Permission.STUDENT_LOOKUP, school_id=s.school_id, class_id=s.class_id, student_id=s.id
        ).allowed
    ]
    ciphers = await _ciphers_of(ctx.session, crypto, candidates)
    found = [
        (s, ciphers[s.data_key_id])
        for s in candidates
        if s.data_key_id in ciphers and ciphers[s.data_key_id].open_field(s, column) == wanted
    ]
    for student, _ in found:
        await ctx.audit(
            audit.Action.STUDENT_LOOKUP,
            resource_type="student",
            resource_id=student.id,
            student_id=student.id,
            school_id=student.school_id,
            detail={"by": column},
        )
    if not found:
        await ctx.audit(
            audit.Action.STUDENT_LOOKUP, resource_type="student", detail={"by": column, "count": 0}
        )
    return [roster_entry(cipher, s) for s, cipher in found]


__all__ = [
    "DuplicateStudent",
    "StudentAccess",
    "StudentFields",
    "confirm_unique",
    "create_student",
    "details",
    "get_student",
    "insert_student",
    "lookup",
    "roster",
    "update_student",
    "validate",
]
