"""The screening rules of ``casemgr retention run`` (SPEC §4, P3, P5).

Two rules in the shape ``casemgr.care.retention`` runs (``RetentionRule``), meant to run
in this order after the care programme's own:

- ``screening_results``: results that are no longer in use are deleted: those that
  expired (``expires_on`` reached, twelve months after administration) and those whose
  round's governing consent is no longer ``granted`` (withdrawn, or declined after the
  import: hidden from every view at once, erased here). Results of an erased student
  (destroyed key) go too: nothing of them opens any more.
- ``screening_consents``: consent records of rounds that closed more than twelve months
  ago. Their results have expired by then (administration falls within the window),
  and the records hold guardians' names.

Counseling notes stay: they are the counselor's own record, with the student's record's
retention. A note that pointed at an erased result keeps its text and loses the link.
Each rule works in one transaction with one audit event (``screening_result:erase`` /
``consent:erase``) carrying the counts, and none when there was nothing to erase.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.crypto import Crypto
from casemgr.db import transaction
from casemgr.screening.models import Consent, CounselingNote, ScreeningResult, ScreeningRound
from casemgr.screening.services import (
    GRANTED,
    RESULT_MONTHS,
    add_months,
    decision_of,
    latest_consents,
)
from casemgr.settings import Settings
from casemgr.students.models import Student

if TYPE_CHECKING:  # imported at run time inside the rules: the care module imports these
    from casemgr.care.retention import Outcome

BATCH = 500


async def results_due(
    session: AsyncSession, crypto: Crypto, today: date
) -> dict[str, list[uuid.UUID]]:
    """Results out of use on ``today``, by reason."""
    expired = list(
        await session.scalars(select(ScreeningResult.id).where(ScreeningResult.expires_on <= today))
    )
    live = (
        await session.execute(
            select(
                ScreeningResult.id,
                ScreeningResult.round_id,
                ScreeningResult.student_id,
                Student.data_key_id,
            )
            .join(Student, Student.id == ScreeningResult.student_id)
            .where(ScreeningResult.expires_on > today)
        )
    ).all()
    consents = await latest_consents(session, sorted({r.round_id for r in live}))
    # Opening consent decisions is the service's own check; no value leaves this function.
    ciphers = await crypto.ciphers(session, sorted({r.data_key_id for r in live}))
    without_consent: list[uuid.UUID] = []
    erased_students: list[uuid.UUID] = []
    for r in live:
        cipher = ciphers.get(r.data_key_id)
        if cipher is None:
            erased_students.append(r.id)
        elif decision_of(cipher, consents.get((r.round_id, r.student_id))) != GRANTED:
            without_consent.append(r.id)
    return {
        "expired": expired,
        "without_consent": without_consent,
        "erased_student": erased_students,
    }


async def erase_results(session: AsyncSession, result_ids: list[uuid.UUID]) -> None:
    for start in range(0, len(result_ids), BATCH):
        batch = result_ids[start : start + BATCH]
        await session.execute(
            update(CounselingNote).where(CounselingNote.result_id.in_(batch)).values(result_id=None)
        )
        await session.execute(delete(ScreeningResult).where(ScreeningResult.id.in_(batch)))


@dataclass(frozen=True)
class ScreeningResults:
    """Erase results that expired or lost their consent (see the module docstring)."""

    name: str = "screening_results"

    async def run(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crypto: Crypto,
        settings: Settings,
        today: date,
        *,
        dry_run: bool,
    ) -> Outcome:
        from casemgr.care.retention import Outcome  # the care module lists these rules

        async with transaction(sessions) as session:
            due = await results_due(session, crypto, today)
            ids = [result_id for ids in due.values() for result_id in ids]
            if dry_run or not ids:
                return Outcome(due=len(ids), applied=0)
            await erase_results(session, ids)
            await audit.record(
                session,
                audit.Action.SCREENING_RESULT_ERASE,
                actor=None,
                resource_type="screening_result",
                purpose="retention",
                detail={reason: len(found) for reason, found in due.items()},
            )
        return Outcome(due=len(ids), applied=len(ids))


@dataclass(frozen=True)
class ScreeningConsents:
    """Erase consent records of rounds closed more than twelve months ago."""

    name: str = "screening_consents"

    async def run(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crypto: Crypto,
        settings: Settings,
        today: date,
        *,
        dry_run: bool,
    ) -> Outcome:
        from casemgr.care.retention import Outcome  # the care module lists these rules

        async with transaction(sessions) as session:
            old_rounds = select(ScreeningRound.id).where(
                ScreeningRound.closes_on < add_months(today, -RESULT_MONTHS)
            )
            due = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Consent)
                    .where(Consent.round_id.in_(old_rounds))
                )
                or 0
            )
            if dry_run or not due:
                return Outcome(due=due, applied=0)
            # Their results expired already; any still here (retention not run in time)
            # go first, so that no result outlives the consent it rested on.
            await erase_results(
                session,
                list(
                    await session.scalars(
                        select(ScreeningResult.id).where(ScreeningResult.round_id.in_(old_rounds))
                    )
                ),
            )
            await session.execute(delete(Consent).where(Consent.round_id.in_(old_rounds)))
            await audit.record(
                session,
                audit.Action.CONSENT_ERASE,
                actor=None,
                resource_type="consent",
                purpose="retention",
                detail={"consents": due},
            )
        return Outcome(due=due, applied=due)


# The screening rules, in the order they run (after the care programme's).
RULES = (ScreeningResults(), ScreeningConsents())

__all__ = ["RULES", "ScreeningConsents", "ScreeningResults", "erase_results", "results_due"]
