"""Turn a decision into an outcome: allowed goes on, refused is audited and raised.

Features call ``require``; they never compare roles themselves.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.authz.core import Authorizer, Decision, Permission, Principal
from casemgr.errors import Forbidden, NotFound


def actor_of(
    principal: Principal, decision: Decision | None = None, school_id: uuid.UUID | None = None
) -> audit.Actor:
    role = decision.role if decision and decision.role else principal.primary_role
    return audit.Actor(
        user_id=principal.user_id,
        role=role.value if role else None,
        school_id=school_id,
        client=principal.client,
    )


async def require(
    session: AsyncSession,
    authorizer: Authorizer,
    principal: Principal,
    perm: Permission,
    *,
    resource_type: str,
    resource_id: uuid.UUID | str | None = None,
    school_id: uuid.UUID | None = None,
    class_id: uuid.UUID | None = None,
    student_id: uuid.UUID | None = None,
    exists: bool = True,
) -> Decision:
    """Allow, or audit the denial and raise 403 (never allowed) / 404 (out of reach).

    ``exists=False`` reports a record that is not there; it is answered exactly like one
    out of reach, and audited as a denial, so probing ids reveals nothing.
    """
    if not exists:
        decision = Decision(False, 403 if not authorizer.may_ever(principal, perm) else 404)
    else:
        decision = authorizer.decide(
            principal, perm, school_id=school_id, class_id=class_id, student_id=student_id
        )
    if decision.allowed:
        return decision
    await audit.record_denial(
        session,
        perm.value,
        actor=actor_of(principal, school_id=school_id),
        resource_type=resource_type,
        resource_id=resource_id,
        student_id=student_id if exists else None,
        school_id=school_id,
        detail={"status": decision.status},
    )
    if decision.forbidden:
        raise Forbidden("Your role does not allow this action.")
    raise NotFound("No such record.")
