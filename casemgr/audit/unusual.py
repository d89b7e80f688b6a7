"""Unusual access for the auditors to review, computed from the audit trail alone.

Four rules, with thresholds in the settings (``CASEMGR_UNUSUAL_*``, ``CASEMGR_SCHOOL_*``,
``CASEMGR_TIMEZONE``); each finding names an account, a time window and a count, never a
name or any content:

- ``many_reads``: an account read the records of more distinct students than
  ``unusual_reads_per_hour`` within one clock hour (UTC hours; a burst that straddles the
  hour's end is split between two findings' counts, so set the threshold with that in mind);
- ``many_denials``: an account was refused (403 or 404, audited as ``deny``) more often
  than ``unusual_denials_per_hour`` within one clock hour: probing for ids or reach.
  Failed logins are left out (login throttling answers them; a guessed-at account is
  the victim, not the actor);
- ``off_hours``: an account touched students' records (read or write) outside the school
  hours or on a day that is not a school day, in the configured time zone; one finding per
  account and local day;
- ``emergency_access``: an emergency grant (SPEC P6); open until an auditor has reviewed
  it (``casemgr.care.emergency.review_grant``, the same review as
  ``/api/v1/audit/emergency-access/{id}/review``). Every grant is listed until reviewed,
  however old.

A finding's id says what it is (``kind.account.window``: ``many_reads.<hex>.2026090701``,
``off_hours.<hex>.20260907``, ``emergency_access.<grant hex>``), so it is stable while the
events it counts stay the same, and a review can be checked against the trail again. A
review is itself an audit event (``audit:unusual_review`` with an outcome from a closed set,
``explained`` or ``follow_up``): the trail records its own oversight, no table holds it,
and nothing in it can be edited afterwards. A review records the count it saw: when more
of the same happens in the window afterwards, the finding is open again with the larger
count (an "explained" burst does not cover the rest of its hour or day). Emergency grants
keep their own review, with a note sealed under the emergency system key.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal, cast
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Table,
    and_,
    case,
    extract,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy import cast as sql_cast

from casemgr import audit, clock
from casemgr.audit.models import AuditEvent, AuditHead
from casemgr.audit.services import HEAD_ID, Event, record_many
from casemgr.authz import Permission
from casemgr.context import RequestContext
from casemgr.errors import Conflict, Forbidden, InvalidInput, NotFound
from casemgr.settings import Settings

Kind = Literal["many_reads", "many_denials", "off_hours", "emergency_access", "account_reset"]
KINDS: tuple[Kind, ...] = (
    "many_reads",
    "many_denials",
    "off_hours",
    "emergency_access",
    "account_reset",
)
Outcome = Literal["explained", "follow_up"]
OUTCOMES: tuple[Outcome, ...] = ("explained", "follow_up")
OVERSIGHT = "oversight"
DEFAULT_DAYS = 7
MAX_DAYS = 92
GRANT_MINUTES = 60  # casemgr.care.emergency.GRANT_MINUTES
HOUR = timedelta(hours=1)

# Reading a student's records: each of these events names the student it read.
READ_ACTIONS = (
    audit.Action.STUDENT_READ,
    audit.Action.CASE_READ,
    audit.Action.CASE_TIMELINE,
    audit.Action.CASE_READ_EARLIER,
    audit.Action.SUPPORT_LOG_READ,
    audit.Action.HOME_VISIT_READ,
    audit.Action.STUDENT_EXPORT,
    audit.Action.SCREENING_RESULT_READ,
    audit.Action.COUNSELING_NOTE_READ,
)
EMERGENCY_GRANT = audit.Action.EMERGENCY_GRANT.value
EMERGENCY_REVIEW = audit.Action.EMERGENCY_REVIEW.value
ACCOUNT_RESET = audit.Action.USER_RESET_PASSWORD.value

_ID = re.compile(
    r"^(?:(?P<kind>many_reads|many_denials)\.(?P<actor>[0-9a-f]{32})\.(?P<hour>\d{10})"
    r"|off_hours\.(?P<off_actor>[0-9a-f]{32})\.(?P<day>\d{8})"
    r"|emergency_access\.(?P<grant>[0-9a-f]{32})"
    r"|account_reset\.(?P<reset_seq>\d{1,18}))$"
)

_events = cast(Table, AuditEvent.__table__)
_c = _events.c


class Finding(msgspec.Struct):
    """One unusual access, as auditors see it: pseudonymous ids, times and a count."""

    id: str
    kind: Kind
    actor_id: uuid.UUID
    role: str | None
    # The window the rule looked at (an hour, a local day, a grant's 60 minutes).
    window_start: datetime
    window_end: datetime
    first_at: datetime
    last_at: datetime
    # Distinct students read, refusals, accesses off hours, accesses under the grant.
    count: int
    # The setting the count exceeded (None for the rules without one).
    threshold: int | None
    # The student an emergency grant opened (emergency_access only).
    student_id: uuid.UUID | None
    reviewed: bool
    reviewed_at: datetime | None
    reviewed_by: uuid.UUID | None
    # ``explained`` / ``follow_up``; None for emergency grants (their review has a note).
    outcome: str | None
    # The account whose password someone else reset (account_reset only): whoever then
    # signs in with the one-time password acts as that person, so each reset is reviewed,
    # and never by the account it reset.
    account_id: uuid.UUID | None = None


class FindingList(msgspec.Struct):
    items: list[Finding]
    since: datetime
    until: datetime


class ReviewIn(msgspec.Struct, forbid_unknown_fields=True):
    """A review: ``outcome`` for the counted rules, ``note`` for emergency grants."""

    outcome: Outcome | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    reads_per_hour: int
    denials_per_hour: int
    school_hours: tuple[int, int]
    school_days: tuple[int, ...]
    zone: ZoneInfo

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        return cls(
            settings.unusual_reads_per_hour,
            settings.unusual_denials_per_hour,
            tuple(settings.school_hours),  # type: ignore[arg-type]
            tuple(settings.school_days),
            ZoneInfo(settings.timezone),
        )

    def off_hours(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime, str]]:
        """The stretches of [since, until) outside school hours: (start, end, local day)."""
        stretches = []
        day = since.astimezone(self.zone).date()
        last = until.astimezone(self.zone).date()
        start_minutes, end_minutes = self.school_hours
        while day <= last:
            midnight = _local(day, 0, self.zone)
            next_midnight = _local(day + timedelta(days=1), 0, self.zone)
            label = day.strftime("%Y%m%d")
            if day.weekday() not in self.school_days:
                parts = [(midnight, next_midnight)]
            else:
                parts = [
                    (midnight, _local(day, start_minutes, self.zone)),
                    (_local(day, end_minutes, self.zone), next_midnight),
                ]
            for start, end in parts:
                start, end = max(start, since), min(end, until)
                if start < end:
                    stretches.append((start, end, label))
            day += timedelta(days=1)
        return stretches


def _local(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    if minutes >= 24 * 60:
        return _local(day + timedelta(days=1), minutes - 24 * 60, zone)
    wall = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone)
    return wall.astimezone(UTC)


def window(
    since: datetime | None, until: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The period to look at: the last ``DEFAULT_DAYS`` days unless given; at most
    ``MAX_DAYS`` days long."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput.field(name, "give a time zone, e.g. 2026-09-01T00:00:00Z")
    end = (until or now or clock.now()).astimezone(UTC)
    start = (since or end - timedelta(days=DEFAULT_DAYS)).astimezone(UTC)
    if start >= end:
        raise InvalidInput.field("since", "must come before until")
    if end - start > timedelta(days=MAX_DAYS):
        raise InvalidInput.field("since", f"look at {MAX_DAYS} days at most at once")
    return start, end


def _hour_bucket(dialect: str) -> ColumnElement[Any]:
    """Whole hours since the epoch (UTC) of an event's time, on either database."""
    if dialect == "postgresql":
        return sql_cast(func.floor(extract("epoch", _c.at) / 3600), BigInteger)
    # Floor division: SQLAlchemy renders "/" as true division, one bucket per second.
    return sql_cast(func.strftime("%s", _c.at), Integer) // 3600


def _hour_of(bucket: int) -> datetime:
    return datetime.fromtimestamp(int(bucket) * 3600, UTC)


def _hour_label(start: datetime) -> str:
    return start.strftime("%Y%m%d%H")


def _user(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


@dataclass
class _Review:
    at: datetime
    by: uuid.UUID | None
    outcome: str | None
    # What the review saw: a finding whose count grew since is open again (more of the
    # same after an "explained" burst must not pass unseen). None: an emergency grant.
    count: int | None


class Detector:
    """Runs the rules over the trail for one period (one request's session)."""

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.session = ctx.session
        self.rules = Rules.of(ctx.settings)
        self.dialect = self.session.get_bind().dialect.name

    async def hourly(
        self,
        kind: Kind,
        since: datetime,
        until: datetime,
        actor_id: uuid.UUID | None = None,
    ) -> list[Finding]:
        if kind == "many_reads":
            threshold = self.rules.reads_per_hour
            conditions = [
                _c.outcome == audit.ALLOW,
                _c.student_id.is_not(None),
                _c.action.in_([a.value for a in READ_ACTIONS]),
            ]
        else:
            threshold = self.rules.denials_per_hour
            conditions = [_c.outcome == audit.DENY, ~_c.action.like("auth:%")]
        if actor_id is not None:
            conditions.append(_c.actor_id == actor_id)
        # Grouped in an outer query: PostgreSQL would not match the bucket expression in
        # GROUP BY with the selected one (each holds its own bound parameters).
        events = (
            select(
                _c.actor_id,
                _hour_bucket(self.dialect).label("bucket"),
                _c.student_id,
                _c.at,
                _c.role,
            )
            .where(_c.at >= since, _c.at < until, _c.actor_id.is_not(None), *conditions)
            .subquery()
        )
        e = events.c
        measure = func.count(e.student_id.distinct()) if kind == "many_reads" else func.count()
        query = (
            select(
                e.actor_id,
                e.bucket,
                measure.label("n"),
                func.min(e.at).label("first_at"),
                func.max(e.at).label("last_at"),
                func.max(e.role).label("role"),
            )
            .group_by(e.actor_id, e.bucket)
            .having(measure > threshold)
        )
        findings = []
        for row in await self.session.execute(query):
            actor = _user(row.actor_id)
            start = _hour_of(row.bucket)
            findings.append(
                _finding(
                    f"{kind}.{actor.hex}.{_hour_label(start)}",
                    kind,
                    actor,
                    row.role,
                    start,
                    start + HOUR,
                    _aware(row.first_at),
                    _aware(row.last_at),
                    int(row.n),
                    threshold,
                )
            )
        return findings

    async def off_hours(
        self, since: datetime, until: datetime, actor_id: uuid.UUID | None = None
    ) -> list[Finding]:
        stretches = self.rules.off_hours(since, until)
        if not stretches:
            return []
        inside = [(and_(_c.at >= start, _c.at < end), label) for start, end, label in stretches]
        day = case(*[(cond, literal(label)) for cond, label in inside], else_=None)
        conditions = [
            _c.actor_id.is_not(None),
            _c.student_id.is_not(None),
            _c.outcome == audit.ALLOW,
            _c.at >= stretches[0][0],
            _c.at < stretches[-1][1],
            or_(*[cond for cond, _ in inside]),
        ]
        if actor_id is not None:
            conditions.append(_c.actor_id == actor_id)
        events = select(_c.actor_id, day.label("day"), _c.at, _c.role).where(*conditions).subquery()
        e = events.c
        query = select(
            e.actor_id,
            e.day,
            func.count().label("n"),
            func.min(e.at).label("first_at"),
            func.max(e.at).label("last_at"),
            func.max(e.role).label("role"),
        ).group_by(e.actor_id, e.day)
        zone = self.rules.zone
        findings = []
        for row in await self.session.execute(query):
            actor = _user(row.actor_id)
            local_day = datetime.strptime(row.day, "%Y%m%d").date()
            findings.append(
                _finding(
                    f"off_hours.{actor.hex}.{row.day}",
                    "off_hours",
                    actor,
                    row.role,
                    _local(local_day, 0, zone),
                    _local(local_day + timedelta(days=1), 0, zone),
                    _aware(row.first_at),
                    _aware(row.last_at),
                    int(row.n),
                    None,
                )
            )
        return findings

    async def resets(
        self, since: datetime, until: datetime, seq: int | None = None
    ) -> list[Finding]:
        """Every password reset of one account by another in the period, one finding each."""
        query = select(_c.seq, _c.at, _c.actor_id, _c.role, _c.resource_id).where(
            _c.action == ACCOUNT_RESET,
            _c.outcome == audit.ALLOW,
            _c.actor_id.is_not(None),
            _c.resource_id.is_not(None),
        )
        if seq is not None:
            query = query.where(_c.seq == seq)
        else:
            query = query.where(_c.at >= since, _c.at < until)
        findings = []
        for row in await self.session.execute(query):
            at = _aware(row.at)
            finding = _finding(
                f"account_reset.{row.seq}",
                "account_reset",
                _user(row.actor_id),
                row.role,
                at,
                at,
                at,
                at,
                1,
                None,
            )
            finding.account_id = _user(row.resource_id)
            findings.append(finding)
        return findings

    async def emergency(
        self, since: datetime, until: datetime, grant_id: uuid.UUID | None = None
    ) -> list[Finding]:
        """Grants made in the period, and every grant not reviewed yet, however old."""
        reviewed = select(_c.resource_id).where(
            _c.action == EMERGENCY_REVIEW,
            _c.outcome == audit.ALLOW,
            _c.resource_id.is_not(None),  # NOT IN over a NULL would hide every grant
        )
        query = select(_c.at, _c.actor_id, _c.role, _c.resource_id, _c.student_id).where(
            _c.action == EMERGENCY_GRANT, _c.outcome == audit.ALLOW, _c.resource_id.is_not(None)
        )
        if grant_id is not None:
            query = query.where(_c.resource_id == str(grant_id))
        else:
            query = query.where(
                or_(and_(_c.at >= since, _c.at < until), _c.resource_id.not_in(reviewed))
            )
        grants = list(await self.session.execute(query))
        if not grants:
            return []
        span = timedelta(minutes=GRANT_MINUTES)
        accesses = await self.session.execute(
            select(_c.actor_id, _c.student_id, _c.at).where(
                _c.emergency.is_(True),
                _c.actor_id.in_({g.actor_id for g in grants}),
                _c.at >= min(_aware(g.at) for g in grants),
                _c.at <= max(_aware(g.at) for g in grants) + span,
            )
        )
        by_pair: dict[tuple[Any, Any], list[datetime]] = defaultdict(list)
        for row in accesses:
            by_pair[(row.actor_id, row.student_id)].append(_aware(row.at))
        findings = []
        for grant in grants:
            granted = _aware(grant.at)
            times = [t for t in by_pair[(grant.actor_id, grant.student_id)] if t <= granted + span]
            times = [t for t in times if t >= granted]
            grant_uuid = uuid.UUID(grant.resource_id)
            finding = _finding(
                f"emergency_access.{grant_uuid.hex}",
                "emergency_access",
                _user(grant.actor_id),
                grant.role,
                granted,
                granted + span,
                min(times, default=granted),
                max(times, default=granted),
                len(times),
                None,
            )
            finding.student_id = None if grant.student_id is None else _user(grant.student_id)
            findings.append(finding)
        return findings

    async def reviews(self, findings: list[Finding]) -> None:
        """Mark the findings that a review event settled (the first review counts)."""
        counted = [f.id for f in findings if f.kind != "emergency_access"]
        grants = {
            str(uuid.UUID(hex=f.id.split(".")[1])): f
            for f in findings
            if f.kind == "emergency_access"
        }
        found: dict[str, _Review] = {}
        for ids, action in (
            (counted, audit.Action.UNUSUAL_REVIEW.value),
            (list(grants), EMERGENCY_REVIEW),
        ):
            for chunk in _chunks(ids, 500):
                rows = await self.session.execute(
                    select(_c.resource_id, _c.at, _c.actor_id, _c.detail)
                    .where(
                        _c.action == action,
                        _c.outcome == audit.ALLOW,
                        _c.resource_id.in_(chunk),
                    )
                    .order_by(_c.seq)
                )
                for row in rows:
                    outcome = count = None
                    if action != EMERGENCY_REVIEW:
                        detail = msgspec.json.decode(row.detail) if row.detail else {}
                        outcome = detail.get("outcome")
                        count = int(detail.get("count") or 0)
                    review = _Review(
                        _aware(row.at),
                        None if row.actor_id is None else _user(row.actor_id),
                        outcome,
                        count,
                    )
                    if action == EMERGENCY_REVIEW:
                        found.setdefault(row.resource_id, review)  # the first one counts
                    else:
                        found[row.resource_id] = review  # the latest, which saw the most
        for finding in findings:
            key = finding.id
            if finding.kind == "emergency_access":
                key = str(uuid.UUID(hex=finding.id.split(".")[1]))
            settled = found.get(key)
            if settled is not None and (settled.count is None or finding.count <= settled.count):
                finding.reviewed = True
                finding.reviewed_at = settled.at
                finding.reviewed_by = settled.by
                finding.outcome = settled.outcome


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _aware(value: datetime) -> datetime:
    # Raw Core rows of UTCDateTime columns come back through the type; on SQLite an
    # aggregate (min, max) loses the type and comes back as text or a naive datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _finding(
    finding_id: str,
    kind: Kind,
    actor: uuid.UUID,
    role: str | None,
    start: datetime,
    end: datetime,
    first_at: datetime,
    last_at: datetime,
    count: int,
    threshold: int | None,
) -> Finding:
    return Finding(
        id=finding_id,
        kind=kind,
        actor_id=actor,
        role=role,
        window_start=start,
        window_end=end,
        first_at=first_at,
        last_at=last_at,
        count=count,
        threshold=threshold,
        student_id=None,
        reviewed=False,
        reviewed_at=None,
        reviewed_by=None,
        outcome=None,
    )


async def find(
    ctx: RequestContext,
    since: datetime,
    until: datetime,
    *,
    kinds: tuple[Kind, ...] = KINDS,
) -> list[Finding]:
    """Every finding of ``kinds`` in [since, until), with its review; newest first."""
    detector = Detector(ctx)
    findings: list[Finding] = []
    for kind in kinds:
        if kind in ("many_reads", "many_denials"):
            findings += await detector.hourly(kind, since, until)
        elif kind == "off_hours":
            findings += await detector.off_hours(since, until)
        elif kind == "account_reset":
            findings += await detector.resets(since, until)
        else:
            findings += await detector.emergency(since, until)
    await detector.reviews(findings)
    findings.sort(key=lambda f: (f.window_start, f.id), reverse=True)
    return findings


async def list_unusual(
    ctx: RequestContext,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: Kind | None = None,
    reviewed: bool | None = None,
) -> FindingList:
    """``GET /api/v1/audit/unusual``: auditors only; the listing is audited."""
    decision = await ctx.require(Permission.AUDIT_READ, resource_type="audit")
    start, end = window(since, until)
    findings = await find(ctx, start, end, kinds=(kind,) if kind else KINDS)
    if reviewed is not None:
        findings = [f for f in findings if f.reviewed == reviewed]
    await ctx.audit(
        audit.Action.UNUSUAL_LIST,
        resource_type="audit",
        decision=decision,
        purpose=OVERSIGHT,
        detail={"count": len(findings)},
    )
    return FindingList(items=findings, since=start, until=end)


async def _current(ctx: RequestContext, finding_id: str) -> Finding | None:
    """The finding ``finding_id`` names, if the trail still shows it."""
    match = _ID.match(finding_id)
    if match is None:
        return None
    detector = Detector(ctx)
    if match["grant"]:
        found = await detector.emergency(clock.now(), clock.now(), uuid.UUID(hex=match["grant"]))
    elif match["reset_seq"]:
        found = await detector.resets(clock.now(), clock.now(), int(match["reset_seq"]))
    elif match["day"]:
        zone = detector.rules.zone
        try:
            day = datetime.strptime(match["day"], "%Y%m%d").date()
        except ValueError:
            return None
        start = _local(day, 0, zone)
        end = _local(day + timedelta(days=1), 0, zone)
        found = await detector.off_hours(start, end, uuid.UUID(hex=match["off_actor"]))
    else:
        try:
            start = datetime.strptime(match["hour"], "%Y%m%d%H").replace(tzinfo=UTC)
        except ValueError:
            return None
        kind = cast(Kind, match["kind"])
        found = await detector.hourly(kind, start, start + HOUR, uuid.UUID(hex=match["actor"]))
    found = [f for f in found if f.id == finding_id]
    if not found:
        return None
    await detector.reviews(found)
    return found[0]


async def _lock_reviews(ctx: RequestContext) -> None:
    """Serialise reviews: the head of the chain is the lock every append takes anyway.

    (On SQLite a writing request holds the file's write lock from its first statement.)
    """
    head = cast(Table, AuditHead.__table__)
    await ctx.session.execute(select(head.c.last_seq).where(head.c.id == HEAD_ID).with_for_update())


async def review(ctx: RequestContext, finding_id: str, data: ReviewIn) -> Finding:
    """``POST /api/v1/audit/unusual/{id}/review``: an auditor settles one finding."""
    perm = Permission.AUDIT_REVIEW
    if finding_id.startswith("emergency_access.") and ctx.may_ever(perm):
        match = _ID.match(finding_id)
        if match is not None and match["grant"]:
            return await _review_grant(ctx, finding_id, uuid.UUID(hex=match["grant"]), data)
    decision = await ctx.require(perm, resource_type="unusual_access", exists=True)
    await _lock_reviews(ctx)
    finding = await _current(ctx, finding_id)
    if finding is None:
        await ctx.require(perm, resource_type="unusual_access", exists=False)
        raise NotFound("No such record.")  # require() raised already
    errors = []
    if data.outcome is None:
        errors.append({"field": "outcome", "message": "choose explained or follow_up"})
    if data.note is not None:
        errors.append(
            {
                "field": "note",
                "message": "only an emergency access keeps a note; choose an outcome instead",
            }
        )
    if errors:
        raise InvalidInput(errors)
    if finding.account_id is not None and finding.account_id == ctx.principal.user_id:
        # Whoever reset an auditor's password could otherwise settle their own trace by
        # signing in as that auditor: another auditor reviews it.
        await ctx.refuse(
            audit.Action.UNUSUAL_REVIEW,
            Forbidden("A reset of your own account is reviewed by another auditor."),
            decision=decision,
            resource_type="unusual_access",
            resource_id=finding_id,
            purpose=OVERSIGHT,
        )
    if finding.reviewed:
        await ctx.refuse(
            audit.Action.UNUSUAL_REVIEW,
            Conflict("This finding has been reviewed already."),
            decision=decision,
            resource_type="unusual_access",
            resource_id=finding_id,
            purpose=OVERSIGHT,
        )
    # Appended now, in this transaction and under the head's lock taken above (not deferred
    # to the commit), so that a second review waiting for the lock sees this one.
    await record_many(
        ctx.session,
        [
            Event(
                audit.Action.UNUSUAL_REVIEW,
                resource_type="unusual_access",
                resource_id=finding_id,
                detail={"kind": finding.kind, "outcome": data.outcome, "count": finding.count},
            )
        ],
        actor=ctx.actor(decision),
    )
    finding.reviewed = True
    finding.reviewed_at = clock.now()
    finding.reviewed_by = ctx.principal.user_id
    finding.outcome = data.outcome
    return finding


async def _review_grant(
    ctx: RequestContext, finding_id: str, grant_id: uuid.UUID, data: ReviewIn
) -> Finding:
    """An emergency grant: the emergency-access review itself (note sealed with it)."""
    from casemgr.care import emergency

    if await _current(ctx, finding_id) is None:
        await ctx.require(
            Permission.EMERGENCY_ACCESS_REVIEW,
            resource_type="emergency_access",
            resource_id=grant_id,
            exists=False,
        )
    if data.outcome is not None:
        raise InvalidInput.field(
            "outcome", "an emergency access is reviewed with a note, not an outcome"
        )
    reviewed = await emergency.review_grant(ctx, grant_id, data.note)
    finding = await _current(ctx, finding_id)
    if finding is None:  # a grant without its audit event cannot be: the trail would break
        raise NotFound("No such record.")
    # The review's event is written when the request commits: not visible here yet.
    finding.reviewed = True
    finding.reviewed_at = reviewed.reviewed_at
    finding.reviewed_by = reviewed.reviewed_by
    return finding
