"""A student's whole record: export for a guardian's request, and erasure (SPEC P5).

Export (PIPL Art. 45) gathers everything held about one student into one JSON document:
personal details, care categories, case files with their pairings, support logs and
guidance, home visits, and the sections other features add (``EXPORT_SECTIONS``; the
screening feature adds its results there, behind the counselors' permission). The file
is named after the student's neutral code, never the name.

Erasure destroys the student's data key (crypto-shredding): every sealed field of the
student and of every care record about them becomes unreadable at once, everywhere,
backups included. What is left in clear names no one (ids, dates of writing) and is
made inert: blind indexes are overwritten with random bytes (a known student number or
national ID no longer matches), live pairings end, open tasks close, and the reasons of
emergency accesses to the student (sealed under a system key, and possibly naming the
child) are replaced. The audit trail is untouched and still verifies.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.authz import Permission
from casemgr.care.emergency import SYSTEM_KEY as EMERGENCY_KEY
from casemgr.care.models import (
    CareCategory,
    CaseFile,
    EmergencyGrant,
    Guidance,
    HomeVisit,
    Pairing,
    SupportLog,
    Task,
)
from casemgr.care.services import (
    category_out,
    guidance_out,
    home_visit_out,
    lock_student,
    may,
    pairings_of,
    support_log_out,
)
from casemgr.context import RequestContext, StudentAccess
from casemgr.crypto import Crypto
from casemgr.crypto.envelope import BLIND_INDEX_BYTES
from casemgr.errors import Forbidden
from casemgr.screening.services import screening_for_export
from casemgr.students.models import Student
from casemgr.students.services import details

ExportSection = Callable[[RequestContext, StudentAccess], Awaitable[Any]]

# Sections other features add to an export, each behind the permission that reads it:
# (key in the document, permission, function returning JSON-ready data).
EXPORT_SECTIONS: tuple[tuple[str, Permission, ExportSection], ...] = (
    ("screening", Permission.SCREENING_RESULT_READ, screening_for_export),
)

# What an emergency access's reason reads after the student it concerned was erased.
ERASED_REASON = "[withheld: the student's record was erased]"


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


async def export_student(ctx: RequestContext, student_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
    """The student's whole record and the neutral file name to give it."""
    access = await ctx.student(Permission.STUDENT_EXPORT, student_id)
    if access.emergency:
        # Emergency access is for acting on a file in the moment, not for taking the
        # whole record away: that waits for the student's own class teacher or counselor.
        await audit.record_denial(
            ctx.session,
            audit.Action.STUDENT_EXPORT,
            actor=ctx.actor(access.decision, access.school_id),
            resource_type="student",
            resource_id=student_id,
            student_id=student_id,
            school_id=access.school_id,
            emergency=True,
            purpose="emergency_access",
            detail={"status": 403},
        )
        raise Forbidden("A whole record is not exported under emergency access.")
    session, cipher = ctx.session, access.cipher
    categories = [
        category_out(cipher, r)
        for r in await session.scalars(
            select(CareCategory)
            .where(CareCategory.student_id == student_id)
            .order_by(CareCategory.created_at)
        )
    ]
    cases = list(
        await session.scalars(
            select(CaseFile).where(CaseFile.student_id == student_id).order_by(CaseFile.created_at)
        )
    )
    pairings = await pairings_of(session, cipher, [c.id for c in cases])
    logs = [
        support_log_out(cipher, r)
        for r in await session.scalars(
            select(SupportLog).where(SupportLog.student_id == student_id)
        )
    ]
    guidance = [
        guidance_out(cipher, r)
        for r in await session.scalars(select(Guidance).where(Guidance.student_id == student_id))
    ]
    files = []
    for case in cases:
        values = cipher.open_fields(case)
        files.append(
            {
                "id": case.id,
                "code": case.code,
                **values,
                "pairings": [p for p in pairings if p.case_id == case.id],
                "support_logs": sorted(
                    (x for x in logs if x.case_id == case.id), key=lambda x: x.occurred_on
                ),
                "guidance": sorted(
                    (x for x in guidance if x.case_id == case.id), key=lambda x: x.created_at
                ),
            }
        )
    visits = sorted(
        (
            home_visit_out(cipher, r)
            for r in await session.scalars(
                select(HomeVisit).where(HomeVisit.student_id == student_id)
            )
        ),
        key=lambda v: v.visited_on,
    )
    document: dict[str, Any] = {
        "exported_at": clock.now(),
        "student": details(cipher, access.student),
        "care_categories": categories,
        "case_files": files,
        "home_visits": visits,
    }
    included = []
    for name, perm, section in EXPORT_SECTIONS:
        if may(ctx, access, perm).allowed:
            document[name] = await section(ctx, access)
            included.append(name)
    await ctx.audit(
        audit.Action.STUDENT_EXPORT,
        resource_type="student",
        resource_id=student_id,
        access=access,
        detail={"sections": included} if included else None,
    )
    return access.student.code, _plain(document)


async def erase_record(session: AsyncSession, crypto: Crypto, student: Student) -> None:
    """Crypto-shred one student and make what stays in clear inert (module docstring).

    The caller decided the erasure, holds the student's lock and audits it.
    """
    now = clock.now()
    await crypto.shred(session, student.data_key_id)
    student.student_no_bidx = os.urandom(BLIND_INDEX_BYTES)
    student.national_id_bidx = os.urandom(BLIND_INDEX_BYTES)
    await session.execute(
        update(Pairing)
        .where(Pairing.student_id == student.id, Pairing.ended_at.is_(None))
        .values(ended_at=now)
    )
    await session.execute(
        update(Task)
        .where(Task.student_id == student.id, Task.done_at.is_(None))
        .values(done_at=now)
    )
    grants = list(
        await session.scalars(select(EmergencyGrant).where(EmergencyGrant.student_id == student.id))
    )
    if grants:
        cipher = await crypto.system_cipher(session, EMERGENCY_KEY)
        for grant in grants:
            cipher.seal_fields(grant, reason=ERASED_REASON, review_note=None)
            grant.expires_at = min(grant.expires_at, now)
    await session.flush()


async def erase_student(ctx: RequestContext, student_id: uuid.UUID, reason: str) -> None:
    """``POST /api/v1/students/{id}/erase``: the school leader erases a student's record.

    Afterwards every route answers 404 for the student, as for one that never existed.
    """
    access = await ctx.student(Permission.STUDENT_ERASE, student_id)
    await lock_student(ctx.session, access.id)
    await erase_record(ctx.session, ctx.crypto, access.student)
    await ctx.audit(
        audit.Action.STUDENT_ERASE,
        resource_type="student",
        resource_id=student_id,
        access=access,
        detail={"reason": reason},
    )
