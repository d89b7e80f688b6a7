"""School years ("2026-2027"): the calendar's, and a school's own.

The calendar's school year starts on 1 August. A school's current year is the newest one
its classes belong to, so that the school-year rollover, not the calendar, turns over the
"clean slate" views (SPEC P3) of that school.
"""

from __future__ import annotations

import re
import uuid
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import clock

SCHOOL_YEAR = re.compile(r"^(\d{4})-(\d{4})$")
FIRST_MONTH = 8


def school_year_of(day: date) -> str:
    start = day.year if day.month >= FIRST_MONTH else day.year - 1
    return f"{start}-{start + 1}"


def calendar_school_year() -> str:
    return school_year_of(clock.today())


def is_school_year(value: str) -> bool:
    match = SCHOOL_YEAR.match(value)
    return match is not None and int(match.group(2)) == int(match.group(1)) + 1


def next_school_year(value: str) -> str:
    start = int(value[:4]) + 1
    return f"{start}-{start + 1}"


def first_day(value: str) -> date:
    return date(int(value[:4]), FIRST_MONTH, 1)


async def current_school_year(session: AsyncSession, school_id: uuid.UUID | None) -> str:
    """The newest school year of the school's classes (the calendar's when it has none)."""
    from casemgr.schools.models import SchoolClass

    if school_id is None:
        return calendar_school_year()
    newest = await session.scalar(
        select(func.max(SchoolClass.school_year)).where(SchoolClass.school_id == school_id)
    )
    return newest or calendar_school_year()
