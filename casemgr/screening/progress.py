"""Round progress as counts, and the suppression that lets a school leader see them.

A leader sees, per class of a round and for the round as a whole, how many consents are
recorded and granted, how many results are in and how many wait for review. Small counts
could point at a child ("one student of 7B waits for review"), so a leader's table hides
every count under ``k`` (``CASEMGR_REPORT_MIN_CELL``, as for the care summary), zero
included, and then hides more (complementary suppression) until no hidden count can be
worked out from what is shown.

What a reader can use to work a hidden count out, and what :func:`suppress` checks:

- each column adds up to the round's total (when the total is shown);
- along a row the counts never grow: recorded >= granted >= results in >= pending
  review (a result needs granted consent, a pending one is a result);
- a class's recorded consents are at most its number of students (the roster).

Hidden counts get bounds from these facts, narrowed until nothing changes (interval
propagation). A hidden count whose bounds meet is derivable: then the column's smallest
shown count is hidden as well (or the total, when there is no other), or, when the
derivation runs along the row, the shown neighbours in that row. Every round hides at
least one more count, so it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from casemgr import audit, clock
from casemgr.authz import Permission
from casemgr.context import RequestContext
from casemgr.crypto.models import DataKey
from casemgr.schools.models import SchoolClass
from casemgr.screening.bulk import open_value
from casemgr.screening.models import ScreeningResult
from casemgr.screening.schemas import Progress, ProgressRow
from casemgr.screening.services import (
    GRANTED,
    PENDING_REVIEW,
    decision_of,
    latest_consents,
    reach_round,
)
from casemgr.students.models import Student

COLUMNS = ("consents_recorded", "consents_granted", "results_in", "pending_review")
WIDTH = len(COLUMNS)
_UNBOUNDED = 1 << 40


@dataclass
class Suppressed:
    """The published table: ``None`` where a count is hidden."""

    rows: list[list[int | None]]
    total: list[int | None]


def _bounds(
    rows: Sequence[Sequence[int]],
    total: Sequence[int],
    sizes: Sequence[int | None],
    hidden: list[list[bool]],
    total_hidden: list[bool],
) -> tuple[list[list[tuple[int, int]]], list[tuple[int, int]]]:
    """What a reader can tell about every count from the shown ones (see the docstring)."""
    n = len(rows)
    lo = [[0 if hidden[i][j] else rows[i][j] for j in range(WIDTH)] for i in range(n)]
    hi = [[_UNBOUNDED if hidden[i][j] else rows[i][j] for j in range(WIDTH)] for i in range(n)]
    tlo = [0 if total_hidden[j] else total[j] for j in range(WIDTH)]
    thi = [_UNBOUNDED if total_hidden[j] else total[j] for j in range(WIDTH)]
    for i, size in enumerate(sizes):
        if size is not None and hidden[i][0]:
            hi[i][0] = min(hi[i][0], size)
    for _ in range(200):
        changed = False

        def tighten(a: list[int], b: list[int], j: int, low: int, high: int) -> None:
            nonlocal changed
            if low > a[j]:
                a[j] = low
                changed = True
            if high < b[j]:
                b[j] = high
                changed = True

        for i in range(n):
            for j in range(WIDTH - 1):
                # Counts never grow along a row.
                tighten(lo[i], hi[i], j + 1, lo[i][j + 1], min(hi[i][j + 1], hi[i][j]))
                tighten(lo[i], hi[i], j, max(lo[i][j], lo[i][j + 1]), hi[i][j])
        for j in range(WIDTH - 1):
            tighten(tlo, thi, j + 1, tlo[j + 1], min(thi[j + 1], thi[j]))
            tighten(tlo, thi, j, max(tlo[j], tlo[j + 1]), thi[j])
        for j in range(WIDTH):
            sum_lo = sum(lo[i][j] for i in range(n))
            sum_hi = sum(hi[i][j] for i in range(n))
            tighten(tlo, thi, j, max(tlo[j], sum_lo), min(thi[j], sum_hi))
            for i in range(n):
                others_lo = sum_lo - lo[i][j]
                others_hi = sum_hi - hi[i][j]
                tighten(
                    lo[i],
                    hi[i],
                    j,
                    max(lo[i][j], tlo[j] - others_hi),
                    min(hi[i][j], thi[j] - others_lo),
                )
        if not changed:
            break
    cells = [[(lo[i][j], hi[i][j]) for j in range(WIDTH)] for i in range(n)]
    return cells, [(tlo[j], thi[j]) for j in range(WIDTH)]


def suppress(
    rows: Sequence[Sequence[int]], k: int, sizes: Sequence[int | None] | None = None
) -> Suppressed:
    """Hide counts under ``k`` and whatever would let a reader work them out."""
    n = len(rows)
    sizes = list(sizes) if sizes is not None else [None] * n
    total = [sum(row[j] for row in rows) for j in range(WIDTH)]
    hidden = [[row[j] < k for j in range(WIDTH)] for row in rows]
    total_hidden = [total[j] < k for j in range(WIDTH)]

    def hide_smallest_shown(j: int) -> bool:
        shown = [r for r in range(n) if not hidden[r][j]]
        if shown:
            hidden[min(shown, key=lambda r: rows[r][j])][j] = True
            return True
        if not total_hidden[j]:
            total_hidden[j] = True
            return True
        return False

    def hide_row_neighbours(row: list[bool], j: int) -> bool:
        grew = False
        for step in (-1, 1):
            m = j + step
            while 0 <= m < WIDTH and row[m]:
                m += step
            if 0 <= m < WIDTH:
                row[m] = True
                grew = True
        return grew

    while True:
        cells, totals = _bounds(rows, total, sizes, hidden, total_hidden)
        derived = [
            (i, j)
            for i in range(n)
            for j in range(WIDTH)
            if hidden[i][j] and cells[i][j][0] == cells[i][j][1]
        ]
        derived += [
            (-1, j) for j in range(WIDTH) if total_hidden[j] and totals[j][0] == totals[j][1]
        ]
        grew = False
        for i, j in derived:
            if i == -1:
                # A hidden total that the shown counts pin down.
                grew = hide_smallest_shown(j) or hide_row_neighbours(total_hidden, j)
            elif not total_hidden[j] and sum(row[j] for row in hidden) == 1:
                # The only hidden count of a column whose total is shown.
                grew = hide_smallest_shown(j)
            else:
                # Pinned along its row, or by several facts at once.
                grew = hide_row_neighbours(hidden[i], j) or hide_smallest_shown(j)
            if grew:
                break
        if not grew:
            # Nothing left to hide (an empty class's zero is all that can still be told).
            break
    return Suppressed(
        rows=[[None if hidden[i][j] else rows[i][j] for j in range(WIDTH)] for i in range(n)],
        total=[None if total_hidden[j] else total[j] for j in range(WIDTH)],
    )


async def round_progress(ctx: RequestContext, round_id: uuid.UUID) -> Progress:
    """Per class: consents recorded and granted, results in, pending review (counts).

    Counselors see every count; school leaders see them suppressed (module docstring).
    """
    if not ctx.may_ever(Permission.SCREENING_ROUND_READ):
        # Class teachers reach a round to record consent, never its figures: 403 whatever
        # the round.
        await ctx.require(
            Permission.SCREENING_ROUND_READ, resource_type="screening_round", resource_id=round_id
        )
    screening_round, class_ids, _ = await reach_round(ctx, round_id)
    school_id = screening_round.school_id
    exact = ctx.decide(Permission.SCREENING_RESULT_READ, school_id=school_id).allowed
    names = dict(
        (
            await ctx.session.execute(
                select(SchoolClass.id, SchoolClass.name).where(SchoolClass.id.in_(class_ids))
            )
        ).all()
    )
    students = (
        await ctx.session.execute(
            select(
                Student.id,
                Student.class_id,
                Student.data_key_id,
                DataKey.kek_version,
                DataKey.wrapped,
            )
            .join(DataKey, DataKey.id == Student.data_key_id)
            .where(Student.class_id.in_(class_ids), DataKey.wrapped.is_not(None))
        )
    ).all()
    consents = await latest_consents(ctx.session, [round_id])
    results = {
        student_id: (result_id, status)
        for student_id, result_id, status in await ctx.session.execute(
            select(ScreeningResult.student_id, ScreeningResult.id, ScreeningResult.status).where(
                ScreeningResult.round_id == round_id, ScreeningResult.expires_on > clock.today()
            )
        )
    }
    counts = {class_id: [0, 0, 0, 0] for class_id in class_ids}
    sizes = dict.fromkeys(class_ids, 0)
    # Counting opens sealed decisions and statuses as the service, never for the reader:
    # only the counts leave, and suppressed for leaders.
    for s in students:
        sizes[s.class_id] += 1
        consent = consents.get((round_id, s.id))
        if consent is None:
            continue
        row = counts[s.class_id]
        row[0] += 1
        cipher = ctx.crypto.open_data_key(s.data_key_id, s.kek_version, s.wrapped)
        if decision_of(cipher, consent) != GRANTED:
            continue
        row[1] += 1
        if s.id not in results:
            continue
        row[2] += 1
        result_id, sealed_status = results[s.id]
        status = open_value(cipher, ScreeningResult, "status", result_id, sealed_status)
        if status == PENDING_REVIEW:
            row[3] += 1
    ordered = sorted(class_ids, key=lambda c: (names.get(c, ""), str(c)))
    table = [counts[c] for c in ordered]
    k = ctx.settings.report_min_cell
    # Counselors see every count (nothing is under 0).
    shown = suppress(table, 0) if exact else suppress(table, k, [sizes[c] for c in ordered])

    def row_of(
        values: list[int | None],
        class_id: uuid.UUID | None = None,
        class_name: str | None = None,
    ) -> ProgressRow:
        recorded, granted, results_in, pending = values
        return ProgressRow(
            consents_recorded=recorded,
            consents_granted=granted,
            results_in=results_in,
            pending_review=pending,
            suppressed=[c for c, v in zip(COLUMNS, values, strict=True) if v is None],
            class_id=class_id,
            class_name=class_name,
        )

    await ctx.audit(
        audit.Action.SCREENING_PROGRESS_READ,
        resource_type="screening_round",
        resource_id=round_id,
        school_id=school_id,
        detail={"suppressed": not exact},
    )
    return Progress(
        round_id=round_id,
        k=None if exact else k,
        classes=[
            row_of(values, class_id=c, class_name=names.get(c))
            for c, values in zip(ordered, shown.rows, strict=True)
        ],
        total=row_of(shown.total),
    )
