"""The request context: one object that carries what every service needs.

A service's signature then says what it does (``get_student(ctx, student_id)``), not how
it is wired. The context holds the request's transaction, the caller and the three guards
(authorization, encryption, audit) and offers each through one narrow door:

- ``ctx.require(perm, ...)``: decide, audit a refusal, raise 403/404 (``casemgr.authz``);
- ``ctx.student(perm, student_id)``: load a student, decide, and only then unwrap the
  student's data key, returning a ``StudentAccess`` that holds the cipher. There is no
  other way for a feature to get a student's cipher (``casemgr.crypto``);
- ``ctx.audit(action, ...)``: append an event as the caller (``casemgr.audit``), flagged
  when the access rode on an emergency grant; ``ctx.refuse(action, error, ...)``: leave a
  refused request in the trail on its own and raise ``error``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.authz import Authorizer, Decision, Permission, Principal, actor_of, require
from casemgr.crypto import Crypto, FieldCipher
from casemgr.crypto.models import DataKey
from casemgr.errors import DomainError
from casemgr.settings import Settings
from casemgr.students.models import Student


class LoadedStudent(NamedTuple):
    """A student row with its wrapped data key, read by a caller's own joined statement
    (``student`` None: no such student, or one erased); ``school_year`` when it came too."""

    student: Student | None
    kek_version: int | None
    wrapped: bytes | None
    school_year: str | None = None


# Built once: a statement built per request costs more than reading its row.
_STUDENT_WITH_KEY = (
    select(Student, DataKey.kek_version, DataKey.wrapped)
    .join(DataKey, DataKey.id == Student.data_key_id)
    .where(Student.id == bindparam("student_id"))
)


@dataclass(frozen=True, slots=True)
class StudentAccess:
    """A student the caller was allowed to act on, with the cipher of the student's key.

    Everything about the student (personal details, categories, files, notes, screening)
    is sealed under this one key, so this cipher opens all of it, and only after the
    decision that produced this object.
    """

    student: Student
    decision: Decision
    cipher: FieldCipher
    # The school's current school year, when the statement that found the student read it
    # too (``casemgr.care.services.case_access``); else None, and read when needed.
    school_year: str | None = None

    @property
    def id(self) -> uuid.UUID:
        return self.student.id

    @property
    def school_id(self) -> uuid.UUID:
        return self.student.school_id

    @property
    def emergency(self) -> bool:
        return self.decision.emergency


class RequestContext:
    __slots__ = ("authorizer", "crypto", "principal", "session", "settings")

    def __init__(
        self,
        session: AsyncSession,
        crypto: Crypto,
        authorizer: Authorizer,
        principal: Principal,
        settings: Settings,
    ) -> None:
        self.session = session
        self.crypto = crypto
        self.authorizer = authorizer
        self.principal = principal
        self.settings = settings

    def actor(self, decision: Decision | None = None, school_id: uuid.UUID | None = None) -> Any:
        return actor_of(self.principal, decision, school_id)

    def may_ever(self, perm: Permission) -> bool:
        return self.authorizer.may_ever(self.principal, perm)

    def decide(
        self,
        perm: Permission,
        *,
        school_id: uuid.UUID | None = None,
        class_id: uuid.UUID | None = None,
        student_id: uuid.UUID | None = None,
    ) -> Decision:
        """Decide without side effects (filtering lists); refusals are not audited."""
        return self.authorizer.decide(
            self.principal, perm, school_id=school_id, class_id=class_id, student_id=student_id
        )

    async def require(
        self,
        perm: Permission,
        *,
        resource_type: str,
        resource_id: uuid.UUID | str | None = None,
        school_id: uuid.UUID | None = None,
        class_id: uuid.UUID | None = None,
        student_id: uuid.UUID | None = None,
        exists: bool = True,
    ) -> Decision:
        return await require(
            self.session,
            self.authorizer,
            self.principal,
            perm,
            resource_type=resource_type,
            resource_id=resource_id,
            school_id=school_id,
            class_id=class_id,
            student_id=student_id,
            exists=exists,
        )

    async def student(
        self,
        perm: Permission,
        student_id: uuid.UUID,
        *,
        resource_type: str = "student",
        resource_id: uuid.UUID | str | None = None,
        loaded: LoadedStudent | None = None,
    ) -> StudentAccess:
        """Load a student with its wrapped key (one statement), decide ``perm``, unwrap.

        Refusals are audited and raised (403 / 404) before any key is unwrapped; an
        erased student (destroyed key) is "not found" like one that never existed. A
        caller that read the student row in a joined statement of its own hands it over
        as ``loaded`` (the decision, the audit and the unwrapping stay here).
        """
        row = loaded
        if row is None:
            found = (
                await self.session.execute(_STUDENT_WITH_KEY, {"student_id": student_id})
            ).one_or_none()
            row = LoadedStudent(*found) if found is not None else None
        student = row.student if row is not None and row.wrapped is not None else None
        if student is not None and student.id != student_id:
            raise ValueError("the loaded row is another student's")
        decision = await self.require(
            perm,
            resource_type=resource_type,
            resource_id=resource_id if resource_id is not None else student_id,
            school_id=student.school_id if student else None,
            class_id=student.class_id if student else None,
            student_id=student_id,
            exists=student is not None,
        )
        assert row is not None and student is not None  # require() raised otherwise
        cipher = self.crypto.open_data_key(student.data_key_id, row.kek_version, row.wrapped)
        return StudentAccess(student, decision, cipher, row.school_year)

    async def refuse(
        self,
        action: str,
        error: DomainError,
        *,
        resource_type: str,
        resource_id: uuid.UUID | str | None = None,
        decision: Decision | None = None,
        access: StudentAccess | None = None,
        school_id: uuid.UUID | None = None,
        student_id: uuid.UUID | None = None,
        purpose: str | None = None,
    ) -> NoReturn:
        """Refuse a request the caller was allowed to make (a conflict, a rule): the
        request's work is rolled back, a denial naming ``error``'s status (never its
        message) is committed on its own, and ``error`` is raised."""
        if access is not None:
            decision = decision or access.decision
            student_id = student_id or access.id
            school_id = school_id or access.school_id
        emergency = bool(decision and decision.emergency)
        await audit.record_denial(
            self.session,
            action,
            actor=self.actor(decision, school_id),
            resource_type=resource_type,
            resource_id=resource_id,
            student_id=student_id,
            school_id=school_id,
            purpose=purpose or ("emergency_access" if emergency else None),
            emergency=emergency,
            detail={"status": error.status},
        )
        raise error

    async def audit(
        self,
        action: str,
        *,
        resource_type: str,
        resource_id: uuid.UUID | str | None = None,
        decision: Decision | None = None,
        access: StudentAccess | None = None,
        school_id: uuid.UUID | None = None,
        student_id: uuid.UUID | None = None,
        purpose: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int | None:
        """Append an event as the caller, in the request's transaction.

        Give ``access`` for an action on a student: the event then names the student and
        the school, and carries the emergency flag of the decision behind it.
        """
        if access is not None:
            decision = decision or access.decision
            student_id = student_id or access.id
            school_id = school_id or access.school_id
        emergency = bool(decision and decision.emergency)
        return await audit.record(
            self.session,
            action,
            actor=self.actor(decision, school_id),
            resource_type=resource_type,
            resource_id=resource_id,
            student_id=student_id,
            school_id=school_id,
            purpose=purpose or ("emergency_access" if emergency else None),
            emergency=emergency,
            detail=detail,
        )
