"""What happens to a student's care records when the student leaves a school.

At the school-year rollover the top grade leaves: the student's open case file closes with
the reason ``left_school`` and their pairings end. A transfer to another school ends the
pairings with the old school's mentors (the file moves with the student). Both are system
consequences of an administrative act: the caller decided that act and holds the student's
cipher, and holds the student's row locked (``care.services.lock_student``) so that no
other change to the student's files runs at the same time; nothing here is shown to
anyone, and each change is audited.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.care.models import CaseFile, Pairing
from casemgr.care.services import OPEN, close_case_file
from casemgr.crypto import FieldCipher
from casemgr.db import utcnow

LEFT_SCHOOL = "left_school"
TRANSFERRED = "transferred"


async def close_open_case_files(
    session: AsyncSession,
    cipher: FieldCipher,
    student_id: uuid.UUID,
    *,
    reason: str,
    on: date,
    actor: audit.Actor | None,
    school_id: uuid.UUID | None,
    via: str,
) -> int:
    """Close the student's open case file(s); returns how many closed."""
    closed = 0
    for case in await session.scalars(select(CaseFile).where(CaseFile.student_id == student_id)):
        if cipher.open_field(case, "status") != OPEN:
            continue
        close_case_file(cipher, case, closed_on=on, reason=reason)
        closed += 1
        await audit.record(
            session,
            audit.Action.LEAVING_CASE_CLOSE,
            actor=actor,
            resource_type="case",
            resource_id=case.id,
            student_id=student_id,
            school_id=school_id,
            detail={"reason": reason, "via": via},
        )
    return closed


async def end_pairings(
    session: AsyncSession,
    cipher: FieldCipher,
    student_id: uuid.UUID,
    *,
    reason: str,
    on: date,
    actor: audit.Actor | None,
    school_id: uuid.UUID | None,
    via: str,
) -> int:
    """End every pairing of the student that is still running; returns how many ended.

    ``ended_at`` is what mentors' reach reads, so a mentor loses the student at once.
    """
    now = utcnow()
    ended = 0
    for pairing in await session.scalars(
        select(Pairing).where(Pairing.student_id == student_id, Pairing.ended_at.is_(None))
    ):
        pairing.ended_at = now
        cipher.seal_fields(pairing, ends_on=on, end_reason=reason)
        ended += 1
        await audit.record(
            session,
            audit.Action.LEAVING_PAIRING_END,
            actor=actor,
            resource_type="pairing",
            resource_id=pairing.id,
            student_id=student_id,
            school_id=school_id,
            detail={"reason": reason, "via": via},
        )
    return ended


async def student_left(
    session: AsyncSession,
    cipher: FieldCipher,
    student_id: uuid.UUID,
    *,
    on: date,
    actor: audit.Actor | None,
    school_id: uuid.UUID | None,
    via: str,
) -> tuple[int, int]:
    """A student left the school: close the open file, end pairings. (files, pairings)"""
    files = await close_open_case_files(
        session,
        cipher,
        student_id,
        reason=LEFT_SCHOOL,
        on=on,
        actor=actor,
        school_id=school_id,
        via=via,
    )
    pairings = await end_pairings(
        session,
        cipher,
        student_id,
        reason=LEFT_SCHOOL,
        on=on,
        actor=actor,
        school_id=school_id,
        via=via,
    )
    return files, pairings
