"""Screening data for ``casemgr demo``: one PHQ-9 round of the demo school.

Called by ``casemgr.demo.seed`` after the school, its students and the care programme.
The round covers the school's classes of this school year; most guardians granted
consent, a few declined and one withdrew; the students with granted consent have
results (synthetic answers), so that the demo counselor finds some waiting for review
(one with the critical item) and leaders see suppressed progress counts. Everything is
scored by the instrument and sealed under each student's key, as the import does it.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import clock
from casemgr.accounts.models import RoleGrant
from casemgr.authz import Role
from casemgr.crypto import Crypto
from casemgr.db import new_id
from casemgr.schools.models import SchoolClass
from casemgr.screening.instruments import load_catalogue
from casemgr.screening.models import Consent, RoundClass, ScreeningResult, ScreeningRound
from casemgr.screening.services import expiry_of
from casemgr.students.models import Student

ROUND_NAME = "本学期心理健康普查（演示）"
GUARDIAN = "家长（示例）"


def _answers(rng: random.Random, profile: str) -> list[int]:
    if profile == "critical":
        return [1, 2, 1, 1, 0, 1, 1, 0, 1]
    if profile == "raised":
        return [rng.choice((1, 2, 2, 3)) for _ in range(8)] + [0]
    return [rng.choice((0, 0, 0, 1, 1, 2)) for _ in range(8)] + [0]


async def seed_screening(
    session: AsyncSession, crypto: Crypto, *, school_id: uuid.UUID, year: str, rng: random.Random
) -> dict[str, Any]:
    """Add the demo round with consents and results; returns counts (module docstring)."""
    instrument = load_catalogue().get("phq9")
    assert instrument is not None
    today = clock.today()
    classes = list(
        await session.scalars(
            select(SchoolClass)
            .where(SchoolClass.school_id == school_id, SchoolClass.school_year == year)
            .order_by(SchoolClass.name)
        )
    )
    counselor_id = await session.scalar(
        select(RoleGrant.user_id).where(
            RoleGrant.school_id == school_id, RoleGrant.role == Role.COUNSELOR.value
        )
    )
    screening_round = ScreeningRound(
        id=new_id(),
        school_id=school_id,
        name=ROUND_NAME,
        instrument=instrument.code,
        school_year=year,
        opens_on=today - timedelta(days=14),
        closes_on=today + timedelta(days=14),
        created_by=counselor_id,
    )
    session.add(screening_round)
    await session.flush()
    session.add_all(RoundClass(round_id=screening_round.id, class_id=c.id) for c in classes)
    students = list(
        await session.scalars(
            select(Student)
            .where(Student.class_id.in_([c.id for c in classes]))
            .order_by(Student.code)
        )
    )
    ciphers = await crypto.ciphers(session, [s.data_key_id for s in students])
    counts = {"consents": 0, "results": 0, "pending_review": 0}
    recorded_at = clock.now() - timedelta(days=10)
    for n, student in enumerate(students):
        cipher = ciphers[student.data_key_id]
        decisions = ["granted"]
        if n % 11 == 3:
            decisions = ["declined"]
        elif n % 17 == 5:
            decisions = ["granted", "withdrawn"]
        for step, decision in enumerate(decisions):
            consent = Consent(
                id=new_id(),
                round_id=screening_round.id,
                student_id=student.id,
                recorded_by=counselor_id,
                recorded_at=recorded_at + timedelta(days=2 * step, seconds=n),
            )
            cipher.seal_fields(
                consent,
                decision=decision,
                guardian_name=GUARDIAN,
                recorded_on=(recorded_at + timedelta(days=2 * step)).date(),
            )
            session.add(consent)
            counts["consents"] += 1
        if decisions[-1] != "granted":
            continue
        profile = "critical" if n == 1 else "raised" if n % 6 == 0 else "typical"
        answers: list[int | None] = list(_answers(rng, profile))
        scored = instrument.score(answers)
        administered_on = today - timedelta(days=rng.randint(1, 7))
        result = ScreeningResult(
            id=new_id(),
            round_id=screening_round.id,
            student_id=student.id,
            imported_by=counselor_id,
            expires_on=expiry_of(administered_on),
        )
        cipher.seal_fields(
            result,
            administered_on=administered_on,
            answers=scored.answers,
            total=scored.total,
            scales=scored.scales,
            band=scored.band,
            flags=scored.flags,
            status=scored.status,
            review=None,
        )
        session.add(result)
        counts["results"] += 1
        counts["pending_review"] += scored.needs_review
    await session.flush()
    return counts
