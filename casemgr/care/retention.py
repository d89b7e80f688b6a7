"""Retention (SPEC §4, P5): ``casemgr retention run [--dry-run]``.

Each record kind has a rule with its own setting (``casemgr.settings.Settings``):

- ``left_students``: a student who left more than ``retention_left_student_years``
  (``CASEMGR_RETENTION_LEFT_STUDENT_YEARS``, default 3) whole years ago is erased: the
  data key is destroyed (``casemgr.care.records.erase_record``), so the student and every
  care record about them become unreadable.

A rule is an object with a ``name`` and ``run(sessions, crypto, settings, today,
dry_run=...)``; ``RULES`` lists them in the order they run. The screening feature adds its
rule here (results expire 12 months after they were taken). Each erasure is its own
transaction with its own audit event, so an interrupted run resumes where it stopped; the
run as a whole leaves one ``retention:run`` event with what each rule found and did.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Protocol

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit, clock
from casemgr.care.records import erase_record
from casemgr.care.services import lock_student, with_live_key
from casemgr.crypto import Crypto
from casemgr.db import transaction
from casemgr.screening import retention as screening_retention
from casemgr.settings import Settings
from casemgr.students.models import Student


class Outcome(msgspec.Struct):
    """What one rule found due, and what it did (nothing on a dry run)."""

    due: int
    applied: int


class RetentionRule(Protocol):
    @property
    def name(self) -> str: ...

    async def run(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crypto: Crypto,
        settings: Settings,
        today: date,
        *,
        dry_run: bool,
    ) -> Outcome: ...


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


class LeftStudents:
    """Erase students who left more than the configured number of years ago."""

    name = "left_students"

    async def run(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crypto: Crypto,
        settings: Settings,
        today: date,
        *,
        dry_run: bool,
    ) -> Outcome:
        cutoff = years_before(today, settings.retention_left_student_years)
        async with transaction(sessions) as session:
            due: list[uuid.UUID] = list(
                await session.scalars(
                    with_live_key(select(Student.id)).where(
                        Student.enrolment == "left",
                        Student.left_on.is_not(None),
                        Student.left_on < cutoff,
                    )
                )
            )
        applied = 0
        if not dry_run:
            for student_id in due:
                async with transaction(sessions) as session:
                    await lock_student(session, student_id)
                    student = (
                        await session.execute(
                            with_live_key(select(Student)).where(Student.id == student_id)
                        )
                    ).scalar_one_or_none()
                    if student is None:  # erased meanwhile
                        continue
                    await erase_record(session, crypto, student)
                    await audit.record(
                        session,
                        audit.Action.STUDENT_ERASE,
                        actor=None,
                        resource_type="student",
                        resource_id=student_id,
                        student_id=student_id,
                        school_id=student.school_id,
                        purpose="retention",
                        detail={"reason": "retention_expired"},
                    )
                    applied += 1
        return Outcome(due=len(due), applied=applied)


# The rules ``retention run`` applies, in order.
RULES: tuple[RetentionRule, ...] = (LeftStudents(), *screening_retention.RULES)


async def run_retention(
    sessions: async_sessionmaker[AsyncSession],
    crypto: Crypto,
    settings: Settings,
    *,
    dry_run: bool = False,
    rules: tuple[RetentionRule, ...] = RULES,
) -> dict[str, Outcome]:
    today = clock.today()
    outcomes = {
        rule.name: await rule.run(sessions, crypto, settings, today, dry_run=dry_run)
        for rule in rules
    }
    async with transaction(sessions) as session:
        await audit.record(
            session,
            audit.Action.RETENTION_RUN,
            actor=None,
            resource_type="retention",
            detail={
                "dry_run": dry_run,
                "rules": {name: msgspec.to_builtins(o) for name, o in outcomes.items()},
            },
        )
    return outcomes
