"""What a signed-in person does for their own account: who am I, password, second factor,
sessions.

Changing the password checks the current one under the login's throttling
(``casemgr.accounts.throttle``): a stolen token cannot be used to guess the password at
leisure. Argon2 runs with no transaction open, as in ``services.login``. Confirming a
second factor counts wrong codes under the same throttle, and spends the code's time step
so that it cannot be replayed at the next login.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import segno
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import audit
from casemgr.accounts import passwords, throttle
from casemgr.accounts.models import AuthToken, ClassAssignment, User
from casemgr.accounts.policy import password_problem
from casemgr.accounts.services import (
    ACCOUNTS_KEY_LABEL,
    _matching_totp_step,
    _use_totp_step,
)
from casemgr.authz import Permission, Principal, Role, actor_of
from casemgr.context import RequestContext
from casemgr.crypto import Crypto
from casemgr.db import utcnow
from casemgr.errors import Conflict, InvalidInput, NotFound, TooManyAttempts
from casemgr.schools.models import School, SchoolClass
from casemgr.schools.services import ClassOut, class_out
from casemgr.schoolyear import calendar_school_year
from casemgr.settings import Settings

TOTP_ISSUER = "casemgr"


@dataclass(frozen=True)
class Me:
    user: dict[str, object]
    schools: list[dict[str, object]]
    classes: list[ClassOut]


async def who_am_i(ctx: RequestContext) -> Me:
    """The caller's account and what they work with (SPEC §6 ``GET /api/v1/me``).

    Class teachers: their classes; the school's other staff: every class of the school's
    current school year; bureau admins: every school (and no classes). Auditors work with
    the audit trail, not with schools.
    """
    session = ctx.session
    principal = ctx.principal
    user = await session.get(User, principal.user_id)
    assert user is not None  # the token resolved to this active account
    reach = ctx.authorizer.schools_holding(principal, Permission.SCHOOL_READ)
    query = select(School).order_by(School.name, School.code)
    if reach is not None:
        query = query.where(School.id.in_(reach))
    schools = list(await session.scalars(query))

    school_ids = {g.school_id for g in principal.grants if g.school_id is not None}
    years = dict(
        (
            await session.execute(
                select(SchoolClass.school_id, func.max(SchoolClass.school_year))
                .where(SchoolClass.school_id.in_(school_ids))
                .group_by(SchoolClass.school_id)
            )
        ).all()
    )
    whole_school = {
        g.school_id
        for g in principal.grants
        if g.school_id is not None and g.role is not Role.CLASS_TEACHER
    }
    classes: dict[uuid.UUID, SchoolClass] = {}
    for school_id in school_ids:
        year = years.get(school_id) or calendar_school_year()
        in_year = select(SchoolClass).where(
            SchoolClass.school_id == school_id, SchoolClass.school_year == year
        )
        if school_id not in whole_school:
            in_year = in_year.where(
                SchoolClass.id.in_(
                    select(ClassAssignment.class_id).where(
                        ClassAssignment.user_id == principal.user_id
                    )
                )
            )
        for school_class in await session.scalars(in_year):
            classes[school_class.id] = school_class
    ordered = sorted(classes.values(), key=lambda c: (str(c.school_id), c.grade, c.name))
    return Me(
        user={
            "id": user.id,
            "username": user.username,
            "display_name": user.display_name,
            "roles": [{"role": g.role.value, "school_id": g.school_id} for g in principal.grants],
            "totp_enrolled": user.totp_secret is not None,
            "password_change_required": user.password_change_required,
        },
        schools=[{"id": s.id, "name": s.name} for s in schools],
        classes=[class_out(c) for c in ordered],
    )


async def _throttled(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: throttle.Keys,
    principal: Principal,
    action: str,
) -> throttle.Reservation:
    """Reserve an attempt as a login would, or audit the refusal and answer 429."""
    async with sessions() as session, session.begin():
        try:
            return await throttle.admit(session, settings, keys)
        except throttle.Throttled as exc:
            retry_after = exc.retry_after
            await audit.record(
                session,
                action,
                actor=actor_of(principal),
                resource_type="user",
                resource_id=principal.user_id,
                outcome=audit.DENY,
                detail={"reason": "throttled"},
            )
    raise TooManyAttempts(retry_after=retry_after)


async def _failed(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    principal: Principal,
    action: str,
    reason: str,
) -> None:
    """A wrong password or code: the reservation stays, counted as a failure."""
    async with sessions() as session, session.begin():
        await throttle.forget_old(session, settings)
        await audit.record(
            session,
            action,
            actor=actor_of(principal),
            resource_type="user",
            resource_id=principal.user_id,
            outcome=audit.DENY,
            detail={"reason": reason},
        )


async def change_password(
    sessions: async_sessionmaker[AsyncSession],
    crypto: Crypto,
    settings: Settings,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
) -> int:
    """Replace the caller's password; every other token and session ends.

    Returns how many other sessions ended. Call it with no transaction of the request
    open (Argon2 runs twice here).
    """
    async with sessions() as session:
        user = await session.get(User, principal.user_id)
    assert user is not None
    if problem := password_problem(new_password, user.username, user.display_name):
        raise InvalidInput.field("new_password", problem)
    if new_password == current_password:
        raise InvalidInput.field("new_password", "must differ from the current password")
    action = audit.Action.PASSWORD_CHANGE
    keys = throttle.Keys.of(crypto, user.username, principal.client or "unknown")
    reservation = await _throttled(sessions, settings, keys, principal, action)
    matches, _ = await passwords.verify_password(user.password_hash, current_password)
    if not matches:
        await _failed(sessions, settings, principal, action, "credentials")
        raise InvalidInput.field("current_password", "is not correct")
    new_hash = await passwords.hash_password(new_password)
    async with sessions() as session, session.begin():
        await throttle.succeeded(session, reservation)
        # Conditional on the hash just checked: of two changes racing, one wins.
        changed = await session.scalar(
            update(User)
            .where(User.id == user.id, User.password_hash == user.password_hash)
            .values(
                password_hash=new_hash,
                password_change_required=False,
                password_changed_at=utcnow(),
            )
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        if changed is None:
            raise Conflict("The password was changed meanwhile; sign in again.")
        result = await session.execute(
            update(AuthToken)
            .where(
                AuthToken.user_id == user.id,
                AuthToken.revoked_at.is_(None),
                AuthToken.id != principal.token_id,
            )
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        ended = int(getattr(result, "rowcount", 0) or 0)
        await audit.record(
            session,
            action,
            actor=actor_of(principal),
            resource_type="user",
            resource_id=user.id,
            detail={"sessions_ended": ended},
        )
    return ended


@dataclass(frozen=True)
class Enrolment:
    secret: str
    otpauth_uri: str
    qr_svg: str


async def start_totp(ctx: RequestContext) -> Enrolment:
    """A new pending TOTP secret, sealed under the system accounts key until confirmed."""
    user = await ctx.session.get(User, ctx.principal.user_id)
    assert user is not None
    if user.totp_secret is not None:
        raise Conflict(
            "A second factor is enrolled already. To replace it, ask a school leader or"
            " bureau admin to reset the account."
        )
    secret = pyotp.random_base32()
    cipher = await ctx.crypto.system_cipher(ctx.session, ACCOUNTS_KEY_LABEL)
    cipher.seal_fields(user, totp_pending_secret=secret)
    await ctx.session.flush()
    await ctx.audit(audit.Action.TOTP_START, resource_type="user", resource_id=user.id)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)
    qr = segno.make(uri, error="m")
    return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=qr.svg_inline(scale=4))


async def confirm_totp(
    sessions: async_sessionmaker[AsyncSession],
    crypto: Crypto,
    settings: Settings,
    principal: Principal,
    code: str,
) -> None:
    """Move the pending secret to the enrolled one when ``code`` comes from it."""
    action = audit.Action.TOTP_ENROL
    async with sessions() as session:
        pending = await session.scalar(
            select(User.totp_pending_secret).where(User.id == principal.user_id)
        )
    if pending is None:
        raise Conflict("No second factor is being enrolled: start with POST /api/v1/me/totp.")
    keys = throttle.Keys.of(crypto, principal.username, principal.client or "unknown")
    reservation = await _throttled(sessions, settings, keys, principal, action)
    reason = None
    async with sessions() as session, session.begin():
        user = await session.get(User, principal.user_id)
        assert user is not None
        cipher = await crypto.system_cipher(session, ACCOUNTS_KEY_LABEL)
        secret = (
            cipher.open_field(user, "totp_pending_secret")
            if user.totp_pending_secret is not None
            else None
        )
        step = _matching_totp_step(secret, code.strip(), time.time()) if secret else None
        if secret is None or step is None or not await _use_totp_step(session, user.id, step):
            reason = "second_factor"
        else:
            await throttle.succeeded(session, reservation)
            cipher.seal_fields(user, totp_secret=secret, totp_pending_secret=None)
            await audit.record(
                session,
                action,
                actor=actor_of(principal),
                resource_type="user",
                resource_id=user.id,
            )
    if reason is not None:
        await _failed(sessions, settings, principal, action, reason)
        raise InvalidInput.field("code", "is not correct (or was used already)")


@dataclass(frozen=True)
class SessionOut:
    id: uuid.UUID
    kind: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime
    client_addr: str | None
    current: bool


async def live_sessions(ctx: RequestContext) -> list[SessionOut]:
    now = utcnow()
    query = select(AuthToken).where(
        AuthToken.user_id == ctx.principal.user_id,
        AuthToken.revoked_at.is_(None),
        AuthToken.expires_at > now,
    )
    if ctx.settings.token_idle_seconds:
        query = query.where(
            func.coalesce(AuthToken.last_used_at, AuthToken.created_at)
            > now - timedelta(seconds=ctx.settings.token_idle_seconds)
        )
    tokens = await ctx.session.scalars(query.order_by(AuthToken.created_at.desc()))
    return [
        SessionOut(
            id=t.id,
            kind=t.kind,
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            expires_at=t.expires_at,
            client_addr=t.client_addr,
            current=t.id == ctx.principal.token_id,
        )
        for t in tokens
    ]


async def end_session(ctx: RequestContext, session_id: uuid.UUID) -> None:
    """End one of the caller's own live sessions (another person's: 404, like none)."""
    ended = await ctx.session.scalar(
        update(AuthToken)
        .where(
            AuthToken.id == session_id,
            AuthToken.user_id == ctx.principal.user_id,
            AuthToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
        .returning(AuthToken.id)
        .execution_options(synchronize_session=False)
    )
    if ended is None:
        # Another person's session, or none: refused and audited alike (SPEC P2).
        await ctx.refuse(
            audit.Action.SESSION_END,
            NotFound("No such session."),
            resource_type="session",
            resource_id=session_id,
        )
    await ctx.audit(audit.Action.SESSION_END, resource_type="session", resource_id=session_id)
