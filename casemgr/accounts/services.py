"""Accounts: creating staff users, logging in and out, resolving bearer tokens."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy import Select, String, bindparam, cast, func, or_, select, update
from sqlalchemy import join as sa_join
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from casemgr import audit
from casemgr.accounts import passwords, throttle
from casemgr.accounts.models import AuthToken, ClassAssignment, RoleGrant, User
from casemgr.accounts.policy import (
    normalise_username,
    password_problem,
    username_problem,
)
from casemgr.authz import BUREAU_ROLES, SECOND_FACTOR_ROLES, Grant, Principal, Role
from casemgr.authz.core import CONTENT_ROLES
from casemgr.crypto import Crypto
from casemgr.db import UTCDateTime, new_id, utcnow
from casemgr.errors import Conflict, InvalidInput, LoginFailed, TooManyAttempts
from casemgr.schools.models import School, SchoolClass
from casemgr.settings import Settings

ACCOUNTS_KEY_LABEL = "system:accounts"
TOTP_STEP_SECONDS = 30


@dataclass(frozen=True)
class NewUser:
    id: uuid.UUID
    totp_secret: str | None


def _totp_field(user_id: uuid.UUID) -> tuple[str, str, uuid.UUID]:
    return ("users", "totp_secret", user_id)


def _scope_problem(role: Role, school_id: uuid.UUID | None) -> dict[str, str] | None:
    """Bureau roles hold everywhere (no school); every other role holds in one school.

    A school role without a school would reach every school, since NULL means "everywhere".
    """
    if role in BUREAU_ROLES and school_id is not None:
        return {
            "field": "school_id",
            "message": f"{role.value} holds for every school; give no school",
        }
    if role not in BUREAU_ROLES and school_id is None:
        return {"field": "school_id", "message": f"{role.value} needs a school"}
    return None


async def _check_school(session: AsyncSession, school_id: uuid.UUID | None) -> None:
    if school_id is not None and await session.get(School, school_id) is None:
        raise InvalidInput.field("school_id", "no such school")


async def _new_totp_secret(
    session: AsyncSession, crypto: Crypto, user_id: uuid.UUID
) -> tuple[str, bytes]:
    """A fresh TOTP secret (to show once) and its sealed form (to store)."""
    secret = pyotp.random_base32()
    cipher = await crypto.system_cipher(session, ACCOUNTS_KEY_LABEL)
    return secret, cipher.seal(*_totp_field(user_id), secret)


async def create_user(
    session: AsyncSession,
    crypto: Crypto,
    *,
    username: str,
    password: str,
    role: Role,
    school_id: uuid.UUID | None = None,
    class_ids: Sequence[uuid.UUID] = (),
    actor: audit.Actor | None = None,
) -> NewUser:
    """Create a staff account holding one role. Returns the TOTP secret once, if any."""
    errors = []
    username = normalise_username(username)
    if problem := username_problem(username):
        errors.append({"field": "username", "message": problem})
    if problem := password_problem(password, username):
        errors.append({"field": "password", "message": problem})
    if scope_problem := _scope_problem(role, school_id):
        errors.append(scope_problem)
    if class_ids and role is not Role.CLASS_TEACHER:
        errors.append({"field": "class_id", "message": "only class teachers are given classes"})
    if errors:
        raise InvalidInput(errors)
    # Hash before the first query, so a caller's transaction is not held open across it.
    password_hash = await passwords.hash_password(password)
    await _check_school(session, school_id)
    for class_id in class_ids:
        school_class = await session.get(SchoolClass, class_id)
        if school_class is None or school_class.school_id != school_id:
            raise InvalidInput.field("class_id", "no such class in this school")
    if await session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict("That username is taken.")

    user_id = new_id()
    totp_secret, sealed_secret = (
        await _new_totp_secret(session, crypto, user_id)
        if role in SECOND_FACTOR_ROLES
        else (None, None)
    )
    session.add(
        User(
            id=user_id,
            username=username,
            password_hash=password_hash,
            totp_secret=sealed_secret,
        )
    )
    await session.flush()
    session.add(RoleGrant(user_id=user_id, role=role.value, school_id=school_id))
    for class_id in class_ids:
        session.add(ClassAssignment(user_id=user_id, class_id=class_id))
    await audit.record(
        session,
        audit.Action.USER_CREATE,
        actor=actor,
        resource_type="user",
        resource_id=user_id,
        school_id=school_id,
        detail={"role": role.value},
    )
    return NewUser(id=user_id, totp_secret=totp_secret)


async def grant_role(
    session: AsyncSession,
    crypto: Crypto,
    user_id: uuid.UUID,
    role: Role,
    school_id: uuid.UUID | None,
    *,
    actor: audit.Actor | None = None,
) -> str | None:
    """Add a role to an existing account, keeping auditors apart from content roles.

    Returns a new TOTP secret (shown once) when the role needs a second factor the account
    has not enrolled yet.
    """
    held = {
        Role(r)
        for r in await session.scalars(select(RoleGrant.role).where(RoleGrant.user_id == user_id))
    }
    if (role is Role.AUDITOR and held & CONTENT_ROLES) or (
        role in CONTENT_ROLES and Role.AUDITOR in held
    ):
        raise InvalidInput.field(
            "role", "an auditor cannot also hold a role that reads case content"
        )
    if scope_problem := _scope_problem(role, school_id):
        raise InvalidInput([scope_problem])
    await _check_school(session, school_id)
    user = await session.get(User, user_id)
    if user is None:
        raise InvalidInput.field("user_id", "no such user")
    new_secret = None
    if role in SECOND_FACTOR_ROLES and user.totp_secret is None:
        new_secret, user.totp_secret = await _new_totp_secret(session, crypto, user_id)
    session.add(RoleGrant(user_id=user_id, role=role.value, school_id=school_id))
    await audit.record(
        session,
        audit.Action.ROLE_GRANT,
        actor=actor,
        resource_type="user",
        resource_id=user_id,
        school_id=school_id,
        detail={"role": role.value},
    )
    return new_secret


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class LoginResult:
    token: str
    expires_at: datetime
    user: dict[str, object]


def _matching_totp_step(secret: str, code: str, now: float) -> int | None:
    if not code or not code.isascii() or not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // TOTP_STEP_SECONDS)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP_SECONDS), code):
            return step
    return None


async def _use_totp_step(session: AsyncSession, user_id: uuid.UUID, step: int) -> bool:
    """Spend a TOTP time step; False when it (or a later one) was spent already.

    One conditional UPDATE, so that two logins racing with the same code cannot both win:
    the second waits for the first's row lock and then finds the step taken.
    """
    spent = await session.scalar(
        update(User)
        .where(
            User.id == user_id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    return spent is not None


async def _login_denied(session: AsyncSession, user: User | None, reason: str, client: str) -> None:
    await audit.record(
        session,
        audit.Action.LOGIN,
        actor=audit.Actor(user_id=user.id if user else None, role=None, client=client),
        resource_type="session",
        outcome=audit.DENY,
        detail={"reason": reason},
    )


async def login(
    sessions: async_sessionmaker[AsyncSession],
    crypto: Crypto,
    settings: Settings,
    *,
    username: str,
    password: str,
    totp: str | None,
    client: str,
) -> LoginResult:
    """Check credentials and issue a bearer token; every failure looks the same.

    1. One short transaction reserves the attempt (``casemgr.accounts.throttle``) and
       loads the account; a refused reservation is audited and answered 429.
    2. Argon2 runs with no transaction open (it takes tens of milliseconds, and on SQLite
       an open transaction holds the write lock).
    3. A second transaction checks the second factor (its secret is decrypted only after
       the password matched), spends the code, and either issues the token and releases
       the reservation, or keeps the reservation as a failure. Either way it is audited.
    """
    username = normalise_username(username)
    keys = throttle.Keys.of(crypto, username, client)
    async with sessions() as session, session.begin():
        user = (
            await session.scalar(
                select(User).where(User.username == username, User.is_active.is_(True))
            )
            if username_problem(username) is None
            else None
        )
        try:
            reservation = await throttle.admit(session, settings, keys)
        except throttle.Throttled as exc:
            retry_after = exc.retry_after
            reservation = None
            await _login_denied(session, user, "throttled", client)
    if reservation is None:
        raise TooManyAttempts(retry_after=retry_after)

    reason: str | None = None
    new_hash: str | None = None
    if user is None:
        await passwords.burn_verification(password)
        reason = "credentials"
    else:
        matches, needs_rehash = await passwords.verify_password(user.password_hash, password)
        if not matches:
            reason = "credentials"
        elif needs_rehash:
            new_hash = await passwords.hash_password(password)

    async with sessions() as session, session.begin():
        grants: tuple[Grant, ...] = ()
        if reason is None:
            assert user is not None
            grants = await _grants(session, user.id)
            reason = await _second_factor_problem(session, crypto, user, grants, totp)
        if reason is not None:
            await throttle.forget_old(session, settings)
            await _login_denied(session, user, reason, client)
        else:
            assert user is not None
            await throttle.succeeded(session, reservation)
            if new_hash is not None:
                await session.execute(
                    update(User).where(User.id == user.id).values(password_hash=new_hash)
                )
            token, expires_at, token_id = await issue_token(
                session, settings, user.id, client=client
            )
            await audit.record(
                session,
                audit.Action.LOGIN,
                actor=audit.Actor(
                    user_id=user.id,
                    role=grants[0].role.value if grants else None,
                    client=client,
                ),
                resource_type="session",
                resource_id=token_id,
            )
    if reason is not None or user is None:
        raise LoginFailed()
    return LoginResult(token=token, expires_at=expires_at, user=user_summary(user, grants))


async def _second_factor_problem(
    session: AsyncSession,
    crypto: Crypto,
    user: User,
    grants: Sequence[Grant],
    code: str | None,
) -> str | None:
    """Why the second factor fails (None: it passed, or the account needs none yet)."""
    if user.password_change_required:
        # A one-time password (new account, reset) needs no factor: the token it gives
        # reaches only the routes that change it and enrol one (``Principal.restricted``).
        return None
    if user.totp_secret is None:
        # A second-factor role given to an account that never enrolled must not let the
        # password alone through.
        if any(g.role in SECOND_FACTOR_ROLES for g in grants):
            return "second_factor_not_enrolled"
        return None
    cipher = await crypto.system_cipher(session, ACCOUNTS_KEY_LABEL)
    secret = cipher.open(*_totp_field(user.id), user.totp_secret)
    step = _matching_totp_step(secret, code or "", time.time())
    if step is None:
        return "second_factor"
    if not await _use_totp_step(session, user.id, step):
        return "second_factor"  # the code was used already (a replay)
    return None


async def issue_token(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID, *, client: str | None = None
) -> tuple[str, datetime, uuid.UUID]:
    """A new bearer token for ``user_id``: (token, expires_at, token id)."""
    now = utcnow()
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=settings.token_ttl_seconds)
    token_id = new_id()
    session.add(
        AuthToken(
            id=token_id,
            user_id=user_id,
            token_hash=_token_digest(token),
            expires_at=expires_at,
            last_used_at=now,
            client_addr=client,
        )
    )
    return token, expires_at, token_id


def user_summary(user: User, grants: Sequence[Grant]) -> dict[str, object]:
    return {
        "id": user.id,
        "username": user.username,
        "roles": [{"role": g.role.value, "school_id": g.school_id} for g in grants],
    }


async def _grants(session: AsyncSession, user_id: uuid.UUID) -> tuple[Grant, ...]:
    rows = await session.execute(
        select(RoleGrant.role, RoleGrant.school_id)
        .where(RoleGrant.user_id == user_id)
        .order_by(RoleGrant.role)
    )
    return tuple(Grant(Role(role), school_id) for role, school_id in rows)


TOKEN_TOUCH_SECONDS = 60
# No idle timeout: a cut-off before any token could have been used.
_NO_IDLE_CUTOFF = datetime(2000, 1, 1, tzinfo=UTC)
_LIST_SEPARATOR = ","


@functools.cache
def _principal_query() -> Select[Any]:
    """Everything a request needs to know about its caller, as one statement built once.

    The token (live, not revoked, not idle) with its active account, and the account's
    grants, classes, live pairings and live emergency grants as lists in four correlated
    subqueries. Nothing is cached between requests: a disabled account, a revoked token,
    an ended pairing or an expired grant counts from the next request on, in every process.
    """
    from casemgr.care.models import EmergencyGrant, Pairing, PairingMentor

    now = bindparam("now", type_=UTCDateTime)

    def listed(value: ColumnElement[Any], *where: ColumnElement[bool], join: Any = None) -> Any:
        query = select(func.aggregate_strings(value, _LIST_SEPARATOR))
        if join is not None:
            query = query.select_from(join)
        return query.where(*where).scalar_subquery()

    def text(column: Any) -> ColumnElement[str]:
        return cast(column, String)

    return (
        select(
            AuthToken.id,
            AuthToken.last_used_at,
            User.id,
            User.username,
            User.password_change_required,
            User.totp_secret.is_not(None),
            listed(
                RoleGrant.role + ":" + func.coalesce(text(RoleGrant.school_id), ""),
                RoleGrant.user_id == User.id,
            ),
            listed(text(ClassAssignment.class_id), ClassAssignment.user_id == User.id),
            listed(
                text(PairingMentor.student_id),
                PairingMentor.user_id == User.id,
                Pairing.ended_at.is_(None),
                join=sa_join(PairingMentor, Pairing, Pairing.id == PairingMentor.pairing_id),
            ),
            listed(
                text(EmergencyGrant.student_id),
                EmergencyGrant.user_id == User.id,
                EmergencyGrant.expires_at > now,
            ),
        )
        .join(User, User.id == AuthToken.user_id)
        .where(
            AuthToken.token_hash == bindparam("digest"),
            AuthToken.revoked_at.is_(None),
            AuthToken.expires_at > now,
            func.coalesce(AuthToken.last_used_at, AuthToken.created_at)
            > bindparam("idle_after", type_=UTCDateTime),
            User.is_active.is_(True),
        )
    )


def _ids(listed: str | None) -> frozenset[uuid.UUID]:
    return frozenset(uuid.UUID(v) for v in listed.split(_LIST_SEPARATOR)) if listed else frozenset()


def _grants_of(listed: str | None) -> tuple[Grant, ...]:
    grants = []
    for item in listed.split(_LIST_SEPARATOR) if listed else ():
        role, _, school = item.partition(":")
        grants.append(Grant(Role(role), uuid.UUID(school) if school else None))
    return tuple(sorted(grants, key=lambda g: g.role.value))


async def resolve_token(
    session: AsyncSession,
    token: str,
    *,
    idle_seconds: int | None = None,
    client: str | None = None,
) -> Principal | None:
    """The principal behind a live token, or None (expired, idle, revoked, unknown, inactive).

    A token unused for ``idle_seconds`` is dead even before it expires; use refreshes its
    last-used time (at most once a minute, to spare the database a write per request; in a
    request's session the refresh rides with its audit events, ``audit.write_with_trail``).
    Everything authorization needs comes in one statement (``_principal_query``).
    """
    now = utcnow()
    idle_after = now - timedelta(seconds=idle_seconds) if idle_seconds else _NO_IDLE_CUTOFF
    # Core execution on the session's connection: the same transaction, without the ORM's
    # per-statement bookkeeping (the query loads no objects).
    connection = await session.connection()
    row = (
        await connection.execute(
            _principal_query(),
            {"digest": _token_digest(token), "now": now, "idle_after": idle_after},
        )
    ).one_or_none()
    if row is None:
        return None
    (
        token_id,
        last_used_at,
        user_id,
        username,
        must_change,
        enrolled,
        grants_listed,
        classes_listed,
        paired_listed,
        emergency_listed,
    ) = row
    if last_used_at is None or (now - last_used_at).total_seconds() > TOKEN_TOUCH_SECONDS:
        await audit.write_with_trail(
            session, update(AuthToken).where(AuthToken.id == token_id).values(last_used_at=now)
        )
    grants = _grants_of(grants_listed)
    needs_factor = any(g.role in SECOND_FACTOR_ROLES for g in grants) and not enrolled
    return Principal(
        user_id=user_id,
        username=username,
        grants=grants,
        class_ids=_ids(classes_listed),
        paired_student_ids=_ids(paired_listed),
        emergency_student_ids=_ids(emergency_listed),
        token_id=token_id,
        client=client,
        restricted=bool(must_change) or needs_factor,
    )


async def logout(session: AsyncSession, principal: Principal) -> None:
    await session.execute(
        update(AuthToken).where(AuthToken.id == principal.token_id).values(revoked_at=utcnow())
    )
    await audit.record(
        session,
        audit.Action.LOGOUT,
        actor=audit.Actor(user_id=principal.user_id, role=principal.primary_role),
        resource_type="session",
        resource_id=principal.token_id,
    )
