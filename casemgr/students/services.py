"""Students: create, read, roster and exact lookup, each authorized, sealed and audited."""

from __future__ import annotations

import secrets
import uuid
from datetime import date

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.authz import Authorizer, Decision, Permission, Principal, actor_of, require
from casemgr.crypto import Crypto, FieldCipher
from casemgr.db import new_id
from casemgr.errors import Conflict, InvalidInput
from casemgr.schools.models import SchoolClass
from casemgr.students.identity import national_id_problem, normalise_national_id
from casemgr.students.models import Student
from casemgr.students.schemas import (
    Guardian,
    GuardianIn,
    RosterEntry,
    StudentIn,
    StudentOut,
    StudentPatch,
)

TABLE = "students"
# Unambiguous characters only (no 0/O, 1/I/L, U): codes are read aloud and typed on phones.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
_guardians_encoder = msgspec.json.Encoder()
_guardians_decoder = msgspec.json.Decoder(list[Guardian])


def new_student_code() -> str:
    """A random neutral code: nothing in it depends on class, category or date."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def _student_no_index(crypto: Crypto, school_id: uuid.UUID, student_no: str) -> bytes:
    return crypto.blind_index("student_no", student_no, str(school_id))


def _national_id_index(crypto: Crypto, national_id: str) -> bytes:
    return crypto.blind_index("national_id", national_id)


def _open(cipher: FieldCipher, student: Student, column: str) -> str:
    return cipher.open(TABLE, column, student.id, getattr(student, column))


def _open_optional(cipher: FieldCipher, student: Student, column: str) -> str | None:
    return cipher.open_optional(TABLE, column, student.id, getattr(student, column))


def _validate(data: StudentIn) -> tuple[str, str | None]:
    errors = []
    student_no = data.student_no.strip()
    if not student_no:
        errors.append({"field": "student_no", "message": "must not be blank"})
    if not data.full_name.strip():
        errors.append({"field": "full_name", "message": "must not be blank"})
    if data.birth_date > date.today():
        errors.append({"field": "birth_date", "message": "must not be in the future"})
    national_id = None
    if data.national_id is not None:
        national_id = normalise_national_id(data.national_id)
        problem = national_id_problem(national_id)
        if problem:
            errors.append({"field": "national_id", "message": problem})
    if errors:
        raise InvalidInput(errors)
    return student_no, national_id


SEALED_COLUMNS = (
    "full_name",
    "gender",
    "birth_date",
    "student_no",
    "national_id",
    "address",
    "guardians",
)


def _plain_fields(
    data: StudentIn, student_no: str, national_id: str | None
) -> dict[str, str | None]:
    """The plaintext of every sealed column, in its stored form."""
    guardians = [
        Guardian(g.name.strip(), g.relation.strip(), g.phone.strip()) for g in data.guardians or []
    ]
    return {
        "full_name": data.full_name.strip(),
        "gender": data.gender,
        "birth_date": data.birth_date.isoformat(),
        "student_no": student_no,
        "national_id": national_id,
        "address": data.address.strip() if data.address else None,
        "guardians": _guardians_encoder.encode(guardians).decode(),
    }


def _plain_fields_of(current: StudentOut) -> dict[str, str | None]:
    return {
        "full_name": current.full_name,
        "gender": current.gender,
        "birth_date": current.birth_date.isoformat(),
        "student_no": current.student_no,
        "national_id": current.national_id,
        "address": current.address,
        "guardians": _guardians_encoder.encode(current.guardians).decode(),
    }


def _seal_columns(
    student: Student,
    cipher: FieldCipher,
    crypto: Crypto,
    plain: dict[str, str | None],
    columns: list[str],
) -> None:
    """Seal ``columns`` of ``plain`` into ``student`` and keep its blind indexes in step."""
    for column in columns:
        setattr(student, column, cipher.seal_optional(TABLE, column, student.id, plain[column]))
    if "student_no" in columns:
        student.student_no_bidx = _student_no_index(
            crypto, student.school_id, plain["student_no"] or ""
        )
    if "national_id" in columns:
        national_id = plain["national_id"]
        student.national_id_bidx = (
            None if national_id is None else _national_id_index(crypto, national_id)
        )


async def _confirm_unique(
    session: AsyncSession,
    crypto: Crypto,
    school_id: uuid.UUID,
    student_no: str,
    national_id: str | None,
    *,
    exclude_id: uuid.UUID | None = None,
) -> None:
    # Blind indexes are truncated, so a hit is confirmed by decrypting before refusing.
    candidates = await session.scalars(
        select(Student).where(
            Student.school_id == school_id,
            Student.student_no_bidx == _student_no_index(crypto, school_id, student_no),
            Student.id != exclude_id if exclude_id else Student.id.is_not(None),
        )
    )
    for other in candidates:
        cipher = await crypto.cipher(session, other.data_key_id)
        if _open(cipher, other, "student_no") == student_no:
            raise Conflict("A student with that student number exists in this school.")
    if national_id is None:
        return
    candidates = await session.scalars(
        select(Student).where(
            Student.national_id_bidx == _national_id_index(crypto, national_id),
            Student.id != exclude_id if exclude_id else Student.id.is_not(None),
        )
    )
    for other in candidates:
        cipher = await crypto.cipher(session, other.data_key_id)
        if _open_optional(cipher, other, "national_id") == national_id:
            raise Conflict("A student with that national ID exists.")


async def create_student(
    session: AsyncSession,
    crypto: Crypto,
    authorizer: Authorizer,
    principal: Principal,
    data: StudentIn,
) -> Student:
    school_class = await session.get(SchoolClass, data.class_id)
    decision = await require(
        session,
        authorizer,
        principal,
        Permission.STUDENT_CREATE,
        resource_type="class",
        resource_id=data.class_id,
        school_id=school_class.school_id if school_class else None,
        class_id=data.class_id,
        exists=school_class is not None,
    )
    assert school_class is not None
    return await insert_student(
        session,
        crypto,
        school_class,
        data,
        actor=actor_of(principal, decision, school_class.school_id),
    )


async def insert_student(
    session: AsyncSession,
    crypto: Crypto,
    school_class: SchoolClass,
    data: StudentIn,
    *,
    actor: audit.Actor | None,
) -> Student:
    """Validate, seal and store a student (the caller has authorized the write)."""
    student_no, national_id = _validate(data)
    await _confirm_unique(session, crypto, school_class.school_id, student_no, national_id)

    student_id = new_id()
    cipher = crypto.new_data_key(session, "student")
    student = Student(
        id=student_id,
        school_id=school_class.school_id,
        class_id=school_class.id,
        code=new_student_code(),
        data_key_id=cipher.key_id,
    )
    _seal_columns(
        student, cipher, crypto, _plain_fields(data, student_no, national_id), list(SEALED_COLUMNS)
    )
    session.add(student)
    await session.flush()
    await audit.record(
        session,
        audit.Action.STUDENT_CREATE,
        actor=actor,
        resource_type="student",
        resource_id=student_id,
        student_id=student_id,
        school_id=school_class.school_id,
    )
    return student


def details(cipher: FieldCipher, student: Student) -> StudentOut:
    guardians_json = _open_optional(cipher, student, "guardians")
    return StudentOut(
        id=student.id,
        code=student.code,
        school_id=student.school_id,
        class_id=student.class_id,
        full_name=_open(cipher, student, "full_name"),
        gender=_open(cipher, student, "gender"),
        birth_date=date.fromisoformat(_open(cipher, student, "birth_date")),
        student_no=_open(cipher, student, "student_no"),
        national_id=_open_optional(cipher, student, "national_id"),
        address=_open_optional(cipher, student, "address"),
        guardians=_guardians_decoder.decode(guardians_json) if guardians_json else [],
    )


async def authorize_student(
    session: AsyncSession,
    authorizer: Authorizer,
    principal: Principal,
    perm: Permission,
    student_id: uuid.UUID,
) -> tuple[Student, Decision]:
    """Load a student (still sealed) and decide ``perm`` on it; refusals are audited.

    The one way features reach a student record: decryption comes after this returns.
    """
    student = await session.get(Student, student_id)
    decision = await require(
        session,
        authorizer,
        principal,
        perm,
        resource_type="student",
        resource_id=student_id,
        school_id=student.school_id if student else None,
        class_id=student.class_id if student else None,
        student_id=student_id,
        exists=student is not None,
    )
    assert student is not None  # require() raised otherwise
    return student, decision


async def get_student(
    session: AsyncSession,
    crypto: Crypto,
    authorizer: Authorizer,
    principal: Principal,
    student_id: uuid.UUID,
) -> StudentOut:
    student, decision = await authorize_student(
        session, authorizer, principal, Permission.STUDENT_READ, student_id
    )
    # Decrypt only after the decision, then leave the trace in the same transaction.
    out = details(await crypto.cipher(session, student.data_key_id), student)
    await audit.record(
        session,
        audit.Action.STUDENT_READ,
        actor=actor_of(principal, decision, student.school_id),
        resource_type="student",
        resource_id=student.id,
        student_id=student.id,
        school_id=student.school_id,
    )
    return out


async def update_student(
    session: AsyncSession,
    crypto: Crypto,
    authorizer: Authorizer,
    principal: Principal,
    student_id: uuid.UUID,
    patch: StudentPatch,
) -> StudentOut:
    """Change personal details or move the student to another class of the same school."""
    student, decision = await authorize_student(
        session, authorizer, principal, Permission.STUDENT_UPDATE, student_id
    )
    target_class_id = student.class_id if patch.class_id is msgspec.UNSET else patch.class_id
    if target_class_id != student.class_id:
        target = await session.get(SchoolClass, target_class_id)
        if target is None or target.school_id != student.school_id:
            raise InvalidInput.field("class_id", "no such class in this student's school")
        # Moving needs reach over the class the student goes to, as well as the one left.
        await require(
            session,
            authorizer,
            principal,
            Permission.STUDENT_UPDATE,
            resource_type="class",
            resource_id=target.id,
            school_id=target.school_id,
            class_id=target.id,
            student_id=student_id,
        )

    cipher = await crypto.cipher(session, student.data_key_id)
    current = details(cipher, student)
    merged = StudentIn(
        class_id=target_class_id,
        full_name=current.full_name if patch.full_name is msgspec.UNSET else patch.full_name,
        gender=current.gender if patch.gender is msgspec.UNSET else patch.gender,  # type: ignore[arg-type]
        birth_date=current.birth_date if patch.birth_date is msgspec.UNSET else patch.birth_date,
        student_no=current.student_no if patch.student_no is msgspec.UNSET else patch.student_no,
        national_id=current.national_id
        if patch.national_id is msgspec.UNSET
        else patch.national_id,
        address=current.address if patch.address is msgspec.UNSET else patch.address,
        guardians=(
            [GuardianIn(g.name, g.relation, g.phone) for g in current.guardians]
            if patch.guardians is msgspec.UNSET
            else patch.guardians
        ),
    )
    student_no, national_id = _validate(merged)
    await _confirm_unique(
        session, crypto, student.school_id, student_no, national_id, exclude_id=student.id
    )
    plain = _plain_fields(merged, student_no, national_id)
    before = _plain_fields_of(current)
    changed = [column for column in SEALED_COLUMNS if plain[column] != before[column]]
    _seal_columns(student, cipher, crypto, plain, changed)
    if target_class_id != student.class_id:
        student.class_id = target_class_id
        changed.append("class_id")
    await session.flush()
    await audit.record(
        session,
        audit.Action.STUDENT_UPDATE,
        actor=actor_of(principal, decision, student.school_id),
        resource_type="student",
        resource_id=student.id,
        student_id=student.id,
        school_id=student.school_id,
        detail={"fields": changed},
    )
    return details(cipher, student)


def _roster_entry(cipher: FieldCipher, student: Student) -> RosterEntry:
    return RosterEntry(
        id=student.id,
        code=student.code,
        full_name=_open(cipher, student, "full_name"),
        student_no=_open(cipher, student, "student_no"),
    )


async def roster(
    session: AsyncSession,
    crypto: Crypto,
    authorizer: Authorizer,
    principal: Principal,
    class_id: uuid.UUID,
) -> list[RosterEntry]:
    """A class list with the same fields for every student (SPEC P3).

    Whole-class reach (class teacher, counselor, leader) lists everyone; a mentor sees the
    students they are paired with; a class with nobody in reach is "not found".
    """
    school_class = await session.get(SchoolClass, class_id)
    school_id = school_class.school_id if school_class else None
    decision = authorizer.decide(
        principal, Permission.ROSTER_READ, school_id=school_id, class_id=class_id
    )
    students = (
        list(await session.scalars(select(Student).where(Student.class_id == class_id)))
        if school_class is not None
        else []
    )
    visible = [
        s
        for s in students
        if decision.allowed
        or authorizer.decide(
            principal,
            Permission.ROSTER_READ,
            school_id=s.school_id,
            class_id=s.class_id,
            student_id=s.id,
        ).allowed
    ]
    if school_class is None or not (decision.allowed or visible):
        await require(
            session,
            authorizer,
            principal,
            Permission.ROSTER_READ,
            resource_type="class",
            resource_id=class_id,
            school_id=school_id,
            class_id=class_id,
            exists=school_class is not None,
        )
    ciphers = await crypto.ciphers(session, [s.data_key_id for s in visible])
    entries = sorted(
        (_roster_entry(ciphers[s.data_key_id], s) for s in visible),
        key=lambda e: (e.student_no, e.code),
    )
    await audit.record(
        session,
        audit.Action.ROSTER_READ,
        actor=actor_of(principal, decision if decision.allowed else None, school_id),
        resource_type="class",
        resource_id=class_id,
        school_id=school_id,
        detail={"count": len(entries)},
    )
    return entries


async def lookup(
    session: AsyncSession,
    crypto: Crypto,
    authorizer: Authorizer,
    principal: Principal,
    *,
    student_no: str | None = None,
    national_id: str | None = None,
) -> list[RosterEntry]:
    """Exact lookup through blind indexes, limited to the caller's reach."""
    if (student_no is None) == (national_id is None):
        raise InvalidInput.field("student_no", "give exactly one of student_no or national_id")
    if not authorizer.may_ever(principal, Permission.STUDENT_LOOKUP):
        await require(
            session, authorizer, principal, Permission.STUDENT_LOOKUP, resource_type="student"
        )
    if student_no is not None:
        student_no = student_no.strip()
        indexes = [
            _student_no_index(crypto, school_id, student_no) for school_id in principal.school_ids
        ]
        query = select(Student).where(
            Student.student_no_bidx.in_(indexes), Student.school_id.in_(principal.school_ids)
        )
        column, wanted = "student_no", student_no
    else:
        assert national_id is not None
        wanted = normalise_national_id(national_id)
        query = select(Student).where(
            Student.national_id_bidx == _national_id_index(crypto, wanted)
        )
        column = "national_id"
    candidates = [
        s
        for s in await session.scalars(query)
        if authorizer.decide(
            principal,
            Permission.STUDENT_LOOKUP,
            school_id=s.school_id,
            class_id=s.class_id,
            student_id=s.id,
        ).allowed
    ]
    ciphers = await crypto.ciphers(session, [s.data_key_id for s in candidates])
    found = [s for s in candidates if _open_optional(ciphers[s.data_key_id], s, column) == wanted]
    actor = actor_of(principal)
    for student in found:
        await audit.record(
            session,
            audit.Action.STUDENT_LOOKUP,
            actor=actor,
            resource_type="student",
            resource_id=student.id,
            student_id=student.id,
            school_id=student.school_id,
            detail={"by": column},
        )
    if not found:
        await audit.record(
            session,
            audit.Action.STUDENT_LOOKUP,
            actor=actor,
            resource_type="student",
            detail={"by": column, "count": 0},
        )
    return [_roster_entry(ciphers[s.data_key_id], s) for s in found]
