"""Emergency access (SPEC P6): possible, visible and short.

Any staff member with a content role in a student's school may ask for that student's
file by stating a reason (15 characters at least). The grant lasts 60 minutes; while it
is live the caller reaches the student as a class teacher would (``Authorizer.decide``
reads the live grants that ``resolve_token`` puts on the principal each request), and
every event recorded under it carries ``emergency: true``. Auditors list the grants, read
the reasons (sealed under the ``system:emergency`` key, not the student's, since auditors
never read case content) and mark each one reviewed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select

from casemgr import audit, clock
from casemgr.accounts.models import User
from casemgr.audit.models import AuditEvent
from casemgr.authz import Decision, Permission
from casemgr.care.models import EmergencyGrant
from casemgr.care.schemas import EmergencyGrantOut
from casemgr.care.services import clean, with_live_key
from casemgr.context import RequestContext
from casemgr.crypto import FieldCipher
from casemgr.errors import Conflict, InvalidInput
from casemgr.students.models import Student

GRANT_MINUTES = 60
MIN_REASON_CHARS = 15
SYSTEM_KEY = "system:emergency"
OVERSIGHT = "oversight"


async def _system_cipher(ctx: RequestContext) -> FieldCipher:
    return await ctx.crypto.system_cipher(ctx.session, SYSTEM_KEY)


async def _requestable(ctx: RequestContext, student_id: uuid.UUID) -> tuple[Student, Decision]:
    """The student, if the caller may ask for emergency access to them (else 404 / 403)."""
    perm = Permission.EMERGENCY_ACCESS_REQUEST
    student = (
        await ctx.session.execute(with_live_key(select(Student)).where(Student.id == student_id))
    ).scalar_one_or_none()
    decision = (
        ctx.authorizer.decide_in_school(ctx.principal, perm, student.school_id)
        if student is not None
        else None
    )
    if student is None or decision is None or not decision.allowed:
        # 404 for a student of another school or none at all (erased included), 403 for
        # a role that may never ask; audited either way, so that no id can be probed.
        await ctx.require(perm, resource_type="student", resource_id=student_id, exists=False)
    assert student is not None and decision is not None
    return student, decision


def _reaches_already(ctx: RequestContext, student: Student) -> bool:
    """Whether the caller reaches the student's file without any emergency grant."""
    usual = ctx.decide(
        Permission.CASE_READ,
        school_id=student.school_id,
        class_id=student.class_id,
        student_id=student.id,
    )
    return usual.allowed and not usual.emergency


@dataclass(frozen=True)
class AccessState:
    """What the page that asks for emergency access shows (nothing about the student)."""

    # False: the caller reaches the student's file already, without a grant.
    needed: bool
    # When the caller's own live grant on the student ends (None: no live grant).
    live_until: datetime | None
    # Whether the caller reaches the student's personal details (contacts), now.
    details: bool


async def access_state(ctx: RequestContext, student_id: uuid.UUID) -> AccessState:
    """For the page with the request form: decided exactly as ``request_access`` decides
    (404 for a student of another school or none, 403 for a role that may never ask,
    both audited); reads no field of the student."""
    student, _ = await _requestable(ctx, student_id)
    live_until = await ctx.session.scalar(
        select(func.max(EmergencyGrant.expires_at)).where(
            EmergencyGrant.user_id == ctx.principal.user_id,
            EmergencyGrant.student_id == student.id,
            EmergencyGrant.expires_at > clock.now(),
        )
    )
    details = ctx.decide(
        Permission.STUDENT_READ,
        school_id=student.school_id,
        class_id=student.class_id,
        student_id=student.id,
    )
    return AccessState(
        needed=not _reaches_already(ctx, student),
        live_until=live_until,
        details=details.allowed,
    )


async def request_access(ctx: RequestContext, student_id: uuid.UUID, reason: str) -> EmergencyGrant:
    student, decision = await _requestable(ctx, student_id)
    text = (reason or "").strip()
    if len(text) < MIN_REASON_CHARS:
        raise InvalidInput.field(
            "reason", f"state the reason in at least {MIN_REASON_CHARS} characters"
        )
    if _reaches_already(ctx, student):
        await ctx.refuse(
            audit.Action.EMERGENCY_GRANT,
            Conflict("You reach this student's file already: no emergency access is needed."),
            decision=decision,
            resource_type="emergency_access",
            student_id=student.id,
            school_id=student.school_id,
        )
    now = clock.now()
    grant = EmergencyGrant(
        id=uuid.uuid4(),
        user_id=ctx.principal.user_id,
        student_id=student_id,
        school_id=student.school_id,
        granted_at=now,
        expires_at=now + timedelta(minutes=GRANT_MINUTES),
    )
    cipher = await _system_cipher(ctx)
    cipher.seal_fields(grant, reason=text, review_note=None)
    ctx.session.add(grant)
    await ctx.session.flush()
    await ctx.audit(
        audit.Action.EMERGENCY_GRANT,
        resource_type="emergency_access",
        resource_id=grant.id,
        decision=replace(decision, emergency=True),
        student_id=student_id,
        school_id=student.school_id,
    )
    return grant


async def _accesses(ctx: RequestContext, grants: list[EmergencyGrant]) -> dict[uuid.UUID, int]:
    """How many events were recorded under each grant (its user, its student, its hour)."""
    if not grants:
        return {}
    e = AuditEvent
    rows = await ctx.session.execute(
        select(EmergencyGrant.id, func.count(e.seq))
        .join(
            e,
            and_(
                e.actor_id == EmergencyGrant.user_id,
                e.student_id == EmergencyGrant.student_id,
                e.emergency.is_(True),
                e.at >= EmergencyGrant.granted_at,
                e.at <= EmergencyGrant.expires_at,
            ),
        )
        .where(EmergencyGrant.id.in_([g.id for g in grants]))
        .group_by(EmergencyGrant.id)
    )
    return {grant_id: int(count) for grant_id, count in rows}


def _out(
    cipher: FieldCipher, grant: EmergencyGrant, username: str, accesses: int
) -> EmergencyGrantOut:
    values = cipher.open_fields(grant, "reason", "review_note")
    return EmergencyGrantOut(
        id=grant.id,
        user_id=grant.user_id,
        username=username,
        student_id=grant.student_id,
        school_id=grant.school_id,
        granted_at=grant.granted_at,
        expires_at=grant.expires_at,
        live=grant.expires_at > clock.now(),
        reason=values["reason"],
        accesses=accesses,
        reviewed_at=grant.reviewed_at,
        reviewed_by=grant.reviewed_by,
        review_note=values["review_note"],
    )


async def list_grants(
    ctx: RequestContext, *, reviewed: bool | None = None, limit: int = 200
) -> list[EmergencyGrantOut]:
    """Grants for review, newest first (auditors only)."""
    decision = await ctx.require(
        Permission.EMERGENCY_ACCESS_REVIEW, resource_type="emergency_access"
    )
    query = select(EmergencyGrant, User.username).join(User, User.id == EmergencyGrant.user_id)
    if reviewed is not None:
        query = query.where(
            EmergencyGrant.reviewed_at.is_not(None)
            if reviewed
            else EmergencyGrant.reviewed_at.is_(None)
        )
    rows = (
        await ctx.session.execute(query.order_by(EmergencyGrant.granted_at.desc()).limit(limit))
    ).all()
    cipher = await _system_cipher(ctx)
    counts = await _accesses(ctx, [grant for grant, _ in rows])
    items = [_out(cipher, grant, username, counts.get(grant.id, 0)) for grant, username in rows]
    await ctx.audit(
        audit.Action.EMERGENCY_LIST,
        resource_type="emergency_access",
        decision=decision,
        purpose=OVERSIGHT,
        detail={"count": len(items)},
    )
    return items


async def review_grant(
    ctx: RequestContext, grant_id: uuid.UUID, note: str | None
) -> EmergencyGrantOut:
    perm = Permission.EMERGENCY_ACCESS_REVIEW
    grant = await ctx.session.get(EmergencyGrant, grant_id)
    decision = await ctx.require(
        perm, resource_type="emergency_access", resource_id=grant_id, exists=grant is not None
    )
    assert grant is not None
    text = clean("note", note, required=False)
    await ctx.session.refresh(grant, with_for_update=True)
    if grant.reviewed_at is not None:
        await ctx.refuse(
            audit.Action.EMERGENCY_REVIEW,
            Conflict("This emergency access has been reviewed already."),
            decision=decision,
            resource_type="emergency_access",
            resource_id=grant_id,
            purpose=OVERSIGHT,
        )
    cipher = await _system_cipher(ctx)
    grant.reviewed_at = clock.now()
    grant.reviewed_by = ctx.principal.user_id
    cipher.seal_fields(grant, review_note=text)
    await ctx.session.flush()
    username = await ctx.session.scalar(select(User.username).where(User.id == grant.user_id))
    counts = await _accesses(ctx, [grant])
    await ctx.audit(
        audit.Action.EMERGENCY_REVIEW,
        resource_type="emergency_access",
        resource_id=grant.id,
        decision=decision,
        purpose=OVERSIGHT,
    )
    return _out(cipher, grant, username or "", counts.get(grant.id, 0))
