"""The care summary: how many students hold each care category, with small counts hidden.

Counting. A category is live until it has ended; a student is counted once per category
they hold live, if enrolled and not erased. Categories and end dates are sealed under each
student's key, so counting decrypts them: one query returns every category row of the
scope with its student's wrapped key, each key is unwrapped once, and two small fields
are opened per row. Nothing decrypted leaves this module except the counts.

Suppression (k = ``Settings.report_min_cell``, at least 5):

1. *Primary.* Every count under k (zero included) is shown as ``null``, ``suppressed``.
   A school's report has no total: its cells overlap (a student may hold several
   categories), and a total would let a single hidden cell be derived from the others.
2. *Complementary, across reports.* A county cell is the total of that category's school
   cells, and every school's report is open to bureau admins. The county cell of a
   category is therefore hidden, besides being under k, whenever the school cells hidden
   in that category could be derived from it: when exactly one school's cell is hidden
   (county minus the shown cells gives it), when the hidden cells add up to less than k
   (their sum is itself a small count; zero would reveal each), or when they add up to
   their largest possible sum (each would be k - 1).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.authz import Permission
from casemgr.care.models import CATEGORIES, CareCategory
from casemgr.context import RequestContext
from casemgr.crypto import Crypto, FieldCipher
from casemgr.crypto.models import DataKey
from casemgr.errors import InvalidInput
from casemgr.schools.models import School
from casemgr.students.models import Student

TABLE = CareCategory.__tablename__


class Cell(msgspec.Struct):
    category: str
    count: int | None
    suppressed: bool


@dataclass(frozen=True)
class Counts:
    """Live category holders per school (schools with none are present, all zero)."""

    by_school: dict[uuid.UUID, Counter[str]]

    def total(self, category: str) -> int:
        return sum(counts[category] for counts in self.by_school.values())


async def live_counts(
    session: AsyncSession, crypto: Crypto, school_id: uuid.UUID | None = None
) -> Counts:
    """Count students with a live category, per school, for one school or the county."""
    schools = select(School.id)
    if school_id is not None:
        schools = schools.where(School.id == school_id)
    holders: dict[uuid.UUID, dict[str, set[uuid.UUID]]] = {
        s: defaultdict(set) for s in await session.scalars(schools)
    }
    query = (
        select(
            CareCategory.id,
            CareCategory.student_id,
            CareCategory.category,
            CareCategory.ended_on,
            Student.school_id,
            Student.data_key_id,
            DataKey.kek_version,
            DataKey.wrapped,
        )
        .join(Student, Student.id == CareCategory.student_id)
        .join(DataKey, DataKey.id == Student.data_key_id)
        .where(DataKey.wrapped.is_not(None), Student.enrolment == "enrolled")
    )
    if school_id is not None:
        query = query.where(Student.school_id == school_id)
    # Core rows, not ORM ones, in student order: a county is tens of thousands of rows
    # (SPEC §8); each student's key is unwrapped once and dropped when the next one comes.
    result = await (await session.connection()).execute(query.order_by(Student.id))
    cipher: FieldCipher | None = None
    for row_id, student_id, category, ended_on, school, key_id, version, wrapped in result:
        if cipher is None or cipher.key_id != key_id:
            cipher = crypto.open_data_key(key_id, version, wrapped)
        row = str(row_id)
        # A sealed absence opens to None; only a membership with an end date has ended.
        if (
            ended_on is not None
            and cipher.open_payload(TABLE, "ended_on", row, ended_on) is not None
        ):
            continue
        name = cipher.open_payload(TABLE, "category", row, category)
        if name is not None and school in holders:
            holders[school][name.decode()].add(student_id)
    return Counts(
        {
            school: Counter({c: len(students) for c, students in found.items()})
            for school, found in holders.items()
        }
    )


def _cell(category: str, count: int, k: int, hide: bool = False) -> Cell:
    if hide or count < k:
        return Cell(category, None, True)
    return Cell(category, count, False)


def school_cells(counts: Counter[str], k: int) -> list[Cell]:
    return [_cell(c, counts[c], k) for c in CATEGORIES]


def county_cells(counts: Counts, k: int) -> list[Cell]:
    cells = []
    for category in CATEGORIES:
        hidden = [n[category] for n in counts.by_school.values() if n[category] < k]
        derivable = bool(hidden) and (
            len(hidden) == 1 or sum(hidden) < k or sum(hidden) >= len(hidden) * (k - 1)
        )
        cells.append(_cell(category, counts.total(category), k, hide=derivable))
    return cells


class CareSummary(msgspec.Struct):
    k: int
    # None: the whole county.
    school_id: uuid.UUID | None
    cells: list[Cell]


async def care_summary(ctx: RequestContext, school_id: uuid.UUID | None) -> CareSummary:
    """``GET /api/v1/reports/care-summary``: a school's cells for its counselors and
    leaders (and bureau admins); the county's for bureau admins, without ``school_id``."""
    perm = Permission.REPORT_READ
    k = ctx.settings.report_min_cell
    if school_id is None:
        holding = ctx.authorizer.schools_holding(ctx.principal, perm)
        if holding is not None and len(holding) == 1:
            (school_id,) = holding
        elif holding:
            raise InvalidInput.field("school_id", "name the school (you work in several)")
    if school_id is None:
        # The county: only a grant that holds in every school passes (bureau admins).
        decision = await ctx.require(perm, resource_type="report")
        cells = county_cells(await live_counts(ctx.session, ctx.crypto), k)
    else:
        school = await ctx.session.get(School, school_id)
        decision = await ctx.require(
            perm,
            resource_type="report",
            resource_id=school_id,
            school_id=school_id,
            exists=school is not None,
        )
        counts = await live_counts(ctx.session, ctx.crypto, school_id)
        cells = school_cells(counts.by_school[school_id], k)
    await ctx.audit(
        audit.Action.REPORT_READ,
        resource_type="report",
        resource_id=school_id,
        decision=decision,
        school_id=school_id,
        detail={"report": "care_summary", "scope": "school" if school_id else "county"},
    )
    return CareSummary(k=k, school_id=school_id, cells=cells)
