"""What must hold after a run, read from the database (and the key ring) directly."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.audit.models import AuditEvent, AuditHead
from casemgr.care.models import HomeVisit, SupportLog
from casemgr.crypto import Crypto, KeyRing
from casemgr.crypto.models import DataKey
from casemgr.screening.models import ScreeningResult
from casemgr.students.models import Student
from tests.stress.harness import Site
from tests.stress.load import ROSTER_ROWS, Ledger


def audit_head(site: Site) -> int:
    rows = site.query(select(AuditHead.last_seq))
    return int(rows[0][0])


def events_after(site: Site, seq: int) -> Counter[tuple[str, str]]:
    """(actor, action) -> events appended after ``seq``."""
    rows = site.query(
        select(AuditEvent.actor_id, AuditEvent.action, func.count())
        .where(AuditEvent.seq > seq)
        .group_by(AuditEvent.actor_id, AuditEvent.action)
    )
    return Counter({(str(actor), action): int(n) for actor, action, n in rows})


def assert_chain_whole(site: Site) -> int:
    """Gap-free, linked, sealed and matching its checkpoint file; returns its length."""
    head = audit_head(site)
    seqs = site.query(select(func.count(), func.min(AuditEvent.seq), func.max(AuditEvent.seq)))
    assert tuple(seqs[0]) == (head, 1, head), f"sequence is not 1..{head}: {tuple(seqs[0])}"
    result = site.verify()
    assert result.ok, result.as_dict()
    assert result.checked == head
    return head


def students_of(site: Site, school_id: str) -> int:
    rows = site.query(
        select(func.count()).select_from(Student).where(Student.school_id == uuid.UUID(school_id))
    )
    return int(rows[0][0])


def _present(site: Site, model: Any, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = [uuid.UUID(i) for i in ids[start : start + 500]]
        found |= {str(row[0]) for row in site.query(select(model.id).where(model.id.in_(chunk)))}
    return found


def stored_reviews(site: Site, result_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Result -> (outcome, notes) of its stored review, opened with the student's key."""
    crypto = Crypto(KeyRing(site.keys_dir))

    async def body(sessions: async_sessionmaker[AsyncSession]) -> dict[str, tuple[str, str]]:
        reviews = {}
        async with sessions() as session:
            rows = await session.execute(
                select(ScreeningResult, DataKey.id, DataKey.kek_version, DataKey.wrapped)
                .join(Student, Student.id == ScreeningResult.student_id)
                .join(DataKey, DataKey.id == Student.data_key_id)
                .where(ScreeningResult.id.in_([uuid.UUID(r) for r in result_ids]))
            )
            for result, key_id, version, wrapped in rows:
                review = crypto.open_data_key(key_id, version, wrapped).open_fields(result)[
                    "review"
                ]
                if review is not None:
                    reviews[str(result.id)] = (review.outcome, review.notes)
        return reviews

    return site.run(body)


def assert_acknowledged_writes_stored(
    site: Site, ledger: Ledger, students_before: dict[str, int]
) -> dict[str, int]:
    """Every write the service acknowledged is there; returns how many of each kind.

    A write whose request failed (a 503 while the database restarted) may or may not be
    stored, as its answer said: counts then lie between the acknowledged and all that
    were sent, and a result holds its last acknowledged review or one sent after it.
    """
    counts: dict[str, int] = {}
    for kind, model in (("support_log", SupportLog), ("home_visit", HomeVisit)):
        ids = [w[1] for w in ledger.written(kind)]
        missing = set(ids) - _present(site, model, ids)
        assert not missing, f"{len(missing)} acknowledged {kind} writes are missing"
        counts[kind] = len(ids)
    created: Counter[str] = Counter()
    for _, school_id, n in ledger.written("roster"):
        created[school_id] += n
    maybe: Counter[str] = Counter(o.wrote[1] for o in ledger.unanswered("roster") if o.wrote)
    for school_id, before in students_before.items():
        now = students_of(site, school_id) - before
        low, high = created[school_id], created[school_id] + maybe[school_id] * ROSTER_ROWS
        assert low <= now <= high, (school_id, low, now, high)
    counts["students_imported"] = sum(created.values())
    # Per result, the reviews that may be the stored one: the last acknowledged, and any
    # that failed after it.
    candidates: dict[str, list[tuple[str, str]]] = {}
    for o in ledger.outcomes:
        if o.wrote is None or o.wrote[0] != "review":
            continue
        _, result_id, outcome, notes = o.wrote
        if o.acknowledged:
            candidates[result_id] = [(outcome, notes)]
        elif result_id in candidates:
            candidates[result_id].append((outcome, notes))
    stored = stored_reviews(site, list(candidates))
    wrong = {r for r, allowed in candidates.items() if stored.get(r) not in allowed}
    assert not wrong, f"{len(wrong)} results do not hold their last acknowledged review"
    counts["reviews"] = len(ledger.written("review"))
    return counts


def assert_one_event_per_access(site: Site, ledger: Ledger, head_before: int) -> int:
    """The trail holds exactly the events that the acknowledged requests must have left,
    per actor and action, and nothing else since ``head_before``."""
    expected = +ledger.expected_events()
    found = events_after(site, head_before)
    assert found == expected, {
        "missing": dict(expected - found),
        "unexpected": dict(found - expected),
    }
    return sum(found.values())


def assert_events_of(site: Site, ledger: Ledger, since: int) -> None:
    """Each acknowledged request of ``ledger`` left its events (appended after ``since``);
    a request that got no answer left its own at most once."""
    found = events_after(site, since)
    acknowledged = ledger.expected_events()
    unanswered: Counter[tuple[str, str]] = Counter()
    for o in ledger.outcomes:
        if not o.acknowledged:
            for action, count in o.events.items():
                unanswered[(o.actor, action)] += count
    missing = +(acknowledged - found)
    assert not missing, f"events of acknowledged requests missing: {dict(missing)}"
    extra = +(found - acknowledged - unanswered)
    assert not extra, f"events no request explains: {dict(extra)}"
