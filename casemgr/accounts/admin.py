"""Account administration: bureau admins and school leaders create and manage staff.

Who may give which role is policy (``user:grant_<role>`` in ``policies/policy.csv``): a
leader gives the school's staff roles in their own school, a bureau admin every role. The
same permissions decide which existing accounts a caller manages: one whose every role the
caller could have given. So a leader never touches an admin, an auditor or another leader,
and nobody acts on an account of a school outside their reach (404).

Separation of duties (SPEC §3) is checked on top: an auditor holds no other role, and a
bureau admin no role that reads case content. A request that would break it is refused
(403) and audited, whoever asks.

New accounts and reset ones get a one-time password: it logs in without a second factor,
and the token it gives reaches only the self-service routes until the password is changed
and, for the roles that need one, a second factor enrolled (``Principal.restricted``).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit
from casemgr.accounts import passwords
from casemgr.accounts.models import AuthToken, ClassAssignment, RoleGrant, User
from casemgr.accounts.policy import normalise_username, username_problem
from casemgr.accounts.services import create_user, grant_role
from casemgr.authz import BUREAU_ROLES, Decision, Permission, Role
from casemgr.authz.core import CONTENT_ROLES
from casemgr.context import RequestContext
from casemgr.db import utcnow
from casemgr.errors import Forbidden, InvalidInput, NotFound
from casemgr.schools.models import School, SchoolClass
from casemgr.schoolyear import current_school_year

GRANT_PERMISSION: dict[Role, Permission] = {
    Role.CLASS_TEACHER: Permission.USER_GRANT_CLASS_TEACHER,
    Role.TEACHER: Permission.USER_GRANT_TEACHER,
    Role.COUNSELOR: Permission.USER_GRANT_COUNSELOR,
    Role.SCHOOL_LEADER: Permission.USER_GRANT_SCHOOL_LEADER,
    Role.BUREAU_ADMIN: Permission.USER_GRANT_BUREAU_ADMIN,
    Role.AUDITOR: Permission.USER_GRANT_AUDITOR,
}
# Unambiguous characters (no 0/O, 1/I/L, U), in groups: read off a screen, typed once.
ONE_TIME_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
ONE_TIME_GROUPS = 4
ONE_TIME_GROUP_LENGTH = 5  # 20 characters: about 98 bits
MAX_DISPLAY_NAME = 100
SEPARATION_MESSAGE = (
    "An auditor holds no other role, and a bureau admin no role that reads case content."
)


def one_time_password() -> str:
    groups = (
        "".join(secrets.choice(ONE_TIME_ALPHABET) for _ in range(ONE_TIME_GROUP_LENGTH))
        for _ in range(ONE_TIME_GROUPS)
    )
    return "-".join(groups)


def separation_broken(roles: set[Role]) -> bool:
    """Whether one account holding ``roles`` breaks the separation of duties."""
    if Role.AUDITOR in roles and len(roles) > 1:
        return True
    return Role.BUREAU_ADMIN in roles and bool(roles & CONTENT_ROLES)


@dataclass(frozen=True)
class RoleRequest:
    role: Role
    school_id: uuid.UUID | None


@dataclass(frozen=True)
class OneTimeLogin:
    id: uuid.UUID
    username: str
    one_time_password: str


@dataclass(frozen=True)
class AccountOut:
    id: uuid.UUID
    username: str
    display_name: str
    roles: list[dict[str, object]]
    class_ids: list[uuid.UUID]
    totp_enrolled: bool
    password_change_required: bool
    disabled: bool
    created_at: datetime


async def _refuse_separation(
    ctx: RequestContext, resource_id: uuid.UUID | None, school_id: uuid.UUID | None = None
) -> None:
    await audit.record_denial(
        ctx.session,
        audit.Action.ROLE_GRANT,
        actor=ctx.actor(school_id=school_id),
        resource_type="user",
        resource_id=resource_id,
        school_id=school_id,
        detail={"status": 403, "reason": "separation_of_duties"},
    )
    raise Forbidden(SEPARATION_MESSAGE)


async def _require_grant(
    ctx: RequestContext, role: Role, school_id: uuid.UUID | None, user_id: uuid.UUID | None
) -> Decision:
    """May the caller give ``role`` in ``school_id``? 403 never, 404 not in that school."""
    exists = school_id is None or await ctx.session.get(School, school_id) is not None
    return await ctx.require(
        GRANT_PERMISSION[role],
        resource_type="user",
        resource_id=user_id,
        school_id=school_id,
        exists=exists,
    )


async def _grants_of(session: AsyncSession, user_id: uuid.UUID) -> list[RoleRequest]:
    rows = await session.execute(
        select(RoleGrant.role, RoleGrant.school_id).where(RoleGrant.user_id == user_id)
    )
    return [RoleRequest(Role(role), school_id) for role, school_id in rows]


async def require_manageable(ctx: RequestContext, user_id: uuid.UUID) -> tuple[User, Decision]:
    """The account ``user_id`` if the caller manages it (see the module docstring).

    404 when it does not exist or holds a role outside the caller's schools; 403 when it
    holds a role the caller could not have given (another leader, an admin).
    """
    user = await ctx.session.get(User, user_id)
    grants = await _grants_of(ctx.session, user_id) if user is not None else []
    reach = ctx.authorizer.schools_holding(ctx.principal, Permission.USER_MANAGE)
    outside = reach is not None and (
        not grants or any(g.school_id is None or g.school_id not in reach for g in grants)
    )
    if user is None or outside or not ctx.may_ever(Permission.USER_MANAGE):
        await ctx.require(
            Permission.USER_MANAGE, resource_type="user", resource_id=user_id, exists=False
        )
    decision = None
    for grant in grants:
        decision = await _require_grant(ctx, grant.role, grant.school_id, user_id)
    if decision is None:  # an account without roles: bureau-wide managers only (reach None)
        decision = await ctx.require(Permission.USER_MANAGE, resource_type="user")
    assert user is not None
    return user, decision


async def _revoke_tokens(
    session: AsyncSession, user_id: uuid.UUID, keep: uuid.UUID | None = None
) -> int:
    query = update(AuthToken).where(AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None))
    if keep is not None:
        query = query.where(AuthToken.id != keep)
    result = await session.execute(
        query.values(revoked_at=utcnow()).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _check_display_name(value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_DISPLAY_NAME:
        raise InvalidInput.field("display_name", f"1-{MAX_DISPLAY_NAME} characters")
    return value


async def create_account(
    ctx: RequestContext,
    *,
    username: str,
    display_name: str,
    roles: Sequence[RoleRequest],
    class_ids: Sequence[uuid.UUID] = (),
) -> OneTimeLogin:
    """``POST /api/v1/users``: a new account with a one-time password."""
    if not ctx.may_ever(Permission.USER_MANAGE):
        await ctx.require(Permission.USER_MANAGE, resource_type="user")
    requested = list(dict.fromkeys(roles))
    if not requested:
        raise InvalidInput.field("roles", "give at least one role")
    decisions = [await _require_grant(ctx, r.role, r.school_id, None) for r in requested]
    if separation_broken({r.role for r in requested}):
        await _refuse_separation(ctx, None, requested[0].school_id)

    errors = []
    normalised = normalise_username(username)
    if problem := username_problem(normalised):
        errors.append({"field": "username", "message": problem})
    try:
        display_name = _check_display_name(display_name)
    except InvalidInput as exc:
        errors.extend(exc.extra["errors"])
    for n, request in enumerate(requested):
        if request.role in BUREAU_ROLES and request.school_id is not None:
            errors.append({"field": f"roles[{n}].school_id", "message": "give no school"})
        if request.role not in BUREAU_ROLES and request.school_id is None:
            errors.append({"field": f"roles[{n}].school_id", "message": "needs a school"})
    teaching = {r.school_id for r in requested if r.role is Role.CLASS_TEACHER}
    classes: list[SchoolClass] = []
    for n, class_id in enumerate(dict.fromkeys(class_ids)):
        school_class = await ctx.session.get(SchoolClass, class_id)
        if school_class is None or school_class.school_id not in teaching:
            errors.append(
                {
                    "field": f"class_ids[{n}]",
                    "message": "no such class in a school where the account is a class teacher",
                }
            )
        else:
            classes.append(school_class)
    if errors:
        raise InvalidInput(errors)

    password = one_time_password()
    first, rest = requested[0], requested[1:]
    actor = ctx.actor(decisions[0], first.school_id)
    created = await create_user(
        ctx.session,
        ctx.crypto,
        username=normalised,
        password=password,
        role=first.role,
        school_id=first.school_id,
        actor=actor,
    )
    for request in rest:
        await grant_role(
            ctx.session, ctx.crypto, created.id, request.role, request.school_id, actor=actor
        )
    for school_class in classes:
        ctx.session.add(ClassAssignment(user_id=created.id, class_id=school_class.id))
    # The account enrols its own factor after the first login: none is made for it here.
    await ctx.session.execute(
        update(User)
        .where(User.id == created.id)
        .values(
            display_name=display_name,
            created_by=ctx.principal.user_id,
            password_change_required=True,
            totp_secret=None,
            totp_pending_secret=None,
        )
        .execution_options(synchronize_session=False)
    )
    return OneTimeLogin(created.id, normalised, password)


async def list_accounts(ctx: RequestContext, school_id: uuid.UUID | None) -> list[AccountOut]:
    """Accounts holding a role in the caller's schools (a bureau admin: every account)."""
    if not ctx.may_ever(Permission.USER_MANAGE):
        await ctx.require(Permission.USER_MANAGE, resource_type="user")
    reach = ctx.authorizer.schools_holding(ctx.principal, Permission.USER_MANAGE)
    if school_id is not None:
        exists = await ctx.session.get(School, school_id) is not None
        if not exists or (reach is not None and school_id not in reach):
            await ctx.require(
                Permission.USER_MANAGE,
                resource_type="school",
                resource_id=school_id,
                school_id=school_id,
                exists=False,
            )
        shown: frozenset[uuid.UUID] | None = frozenset({school_id})
    else:
        shown = reach
    query = select(User).order_by(User.username)
    if shown is not None:
        query = query.where(
            User.id.in_(select(RoleGrant.user_id).where(RoleGrant.school_id.in_(shown)))
        )
    users = list(await ctx.session.scalars(query))
    ids = [u.id for u in users]
    grants: dict[uuid.UUID, list[dict[str, object]]] = {i: [] for i in ids}
    for user_id, role, grant_school in await ctx.session.execute(
        select(RoleGrant.user_id, RoleGrant.role, RoleGrant.school_id)
        .where(RoleGrant.user_id.in_(ids))
        .order_by(RoleGrant.role)
    ):
        # Roles in schools the caller does not reach are not the caller's business.
        if reach is None or grant_school in reach:
            grants[user_id].append({"role": role, "school_id": grant_school})
    classes: dict[uuid.UUID, list[uuid.UUID]] = {i: [] for i in ids}
    for user_id, class_id in await ctx.session.execute(
        select(ClassAssignment.user_id, ClassAssignment.class_id)
        .join(SchoolClass, SchoolClass.id == ClassAssignment.class_id)
        .where(ClassAssignment.user_id.in_(ids))
        .where(
            SchoolClass.school_id.in_(reach) if reach is not None else SchoolClass.id.is_not(None)
        )
    ):
        classes[user_id].append(class_id)
    await ctx.audit(
        audit.Action.USER_LIST,
        resource_type="user",
        school_id=school_id,
        detail={"count": len(users)},
    )
    return [
        AccountOut(
            id=u.id,
            username=u.username,
            display_name=u.display_name,
            roles=grants[u.id],
            class_ids=sorted(classes[u.id], key=str),
            totp_enrolled=u.totp_secret is not None,
            password_change_required=u.password_change_required,
            disabled=not u.is_active,
            created_at=u.created_at,
        )
        for u in users
    ]


def _not_yourself(ctx: RequestContext, user_id: uuid.UUID, what: str) -> None:
    if user_id == ctx.principal.user_id:
        raise InvalidInput.field("user_id", f"{what} another account; use /api/v1/me for yours")


async def disable_account(ctx: RequestContext, user_id: uuid.UUID) -> None:
    """Disable an account: every token and web session of it ends at once."""
    user, decision = await require_manageable(ctx, user_id)
    _not_yourself(ctx, user_id, "disable")
    await ctx.session.execute(
        update(User)
        .where(User.id == user_id)
        .values(is_active=False, disabled_at=user.disabled_at or utcnow())
        .execution_options(synchronize_session=False)
    )
    ended = await _revoke_tokens(ctx.session, user_id)
    await ctx.audit(
        audit.Action.USER_DISABLE,
        resource_type="user",
        resource_id=user_id,
        decision=decision,
        detail={"sessions_ended": ended},
    )


async def reset_password(ctx: RequestContext, user_id: uuid.UUID) -> OneTimeLogin:
    """A new one-time password; the second factor is cleared and every session ends."""
    user, decision = await require_manageable(ctx, user_id)
    _not_yourself(ctx, user_id, "reset")
    password = one_time_password()
    password_hash = await passwords.hash_password(password)
    await ctx.session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            password_hash=password_hash,
            password_change_required=True,
            totp_secret=None,
            totp_pending_secret=None,
            # The next factor is a new secret: steps spent under the old one say nothing.
            totp_last_step=None,
        )
        .execution_options(synchronize_session=False)
    )
    ended = await _revoke_tokens(ctx.session, user_id)
    await ctx.audit(
        audit.Action.USER_RESET_PASSWORD,
        resource_type="user",
        resource_id=user_id,
        decision=decision,
        detail={"sessions_ended": ended, "second_factor_cleared": user.totp_secret is not None},
    )
    return OneTimeLogin(user_id, user.username, password)


async def _class_for_assignment(
    ctx: RequestContext, class_id: uuid.UUID
) -> tuple[SchoolClass, Decision]:
    school_class = await ctx.session.get(SchoolClass, class_id)
    decision = await ctx.require(
        Permission.CLASS_MANAGE,
        resource_type="class",
        resource_id=class_id,
        school_id=school_class.school_id if school_class else None,
        exists=school_class is not None,
    )
    assert school_class is not None
    return school_class, decision


async def assign_class_teacher(
    ctx: RequestContext, class_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Make ``user_id`` a class teacher of ``class_id`` (granting the role if needed)."""
    school_class, decision = await _class_for_assignment(ctx, class_id)
    await _require_grant(ctx, Role.CLASS_TEACHER, school_class.school_id, user_id)
    user, _ = await require_manageable(ctx, user_id)
    held = {g.role for g in await _grants_of(ctx.session, user_id)}
    if separation_broken(held | {Role.CLASS_TEACHER}):
        await _refuse_separation(ctx, user_id, school_class.school_id)
    if not user.is_active:
        raise InvalidInput.field("user_id", "the account is disabled")
    if school_class.school_year != await current_school_year(ctx.session, school_class.school_id):
        raise InvalidInput.field("class_id", "only classes of the school's current school year")
    actor = ctx.actor(decision, school_class.school_id)
    grant = await ctx.session.scalar(
        select(RoleGrant.id).where(
            RoleGrant.user_id == user_id,
            RoleGrant.role == Role.CLASS_TEACHER.value,
            RoleGrant.school_id == school_class.school_id,
        )
    )
    if grant is None:
        await grant_role(
            ctx.session,
            ctx.crypto,
            user_id,
            Role.CLASS_TEACHER,
            school_class.school_id,
            actor=actor,
        )
    assigned = await ctx.session.get(ClassAssignment, (user_id, class_id))
    if assigned is None:
        ctx.session.add(ClassAssignment(user_id=user_id, class_id=class_id))
        await ctx.session.flush()
    await ctx.audit(
        audit.Action.CLASS_ASSIGN_TEACHER,
        resource_type="class",
        resource_id=class_id,
        decision=decision,
        school_id=school_class.school_id,
        detail={"user_id": str(user_id), "new": assigned is None},
    )


async def unassign_class_teacher(
    ctx: RequestContext, class_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    school_class, decision = await _class_for_assignment(ctx, class_id)
    await require_manageable(ctx, user_id)
    result = await ctx.session.execute(
        delete(ClassAssignment)
        .where(ClassAssignment.user_id == user_id, ClassAssignment.class_id == class_id)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise NotFound("That account is not a class teacher of this class.")
    await ctx.audit(
        audit.Action.CLASS_UNASSIGN_TEACHER,
        resource_type="class",
        resource_id=class_id,
        decision=decision,
        school_id=school_class.school_id,
        detail={"user_id": str(user_id)},
    )
