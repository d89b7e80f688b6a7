from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint, Uuid
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from casemgr.crypto.sealed import sealed
from casemgr.db import Base, UTCDateTime, new_id, utcnow


class User(Base):
    """A staff account. ``username`` is stored folded (``casemgr.accounts.policy``)."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # How colleagues know the person (shown in lists and on exports' watermarks).
    display_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    # A one-time password (new account, reset): until it is changed, and a required
    # second factor enrolled, the account's tokens reach only the self-service routes.
    password_change_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false()
    )
    # Sealed under the system "accounts" data key; NULL while no factor is enrolled.
    totp_secret: Mapped[bytes | None] = sealed(str, optional=True, hide_absence=False)
    # A factor being enrolled (``POST /me/totp``), until a code from it is confirmed.
    totp_pending_secret: Mapped[bytes | None] = sealed(str, optional=True, hide_absence=False)
    # Last TOTP time step accepted: a code is good once.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RoleGrant(Base):
    """A role held in one school (``school_id``) or, for bureau roles, everywhere (NULL)."""

    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "role", "school_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    school_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("schools.id"))


class ClassAssignment(Base):
    """A class teacher's class."""

    __tablename__ = "class_assignments"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    class_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("classes.id"), primary_key=True)


class AuthToken(Base):
    """A bearer token (``kind`` "api") or a web UI session ("web"); only its SHA-256 digest
    is stored. Both end together when the account is disabled, reset or its password
    changes, and both are listed and ended through ``/api/v1/me/sessions``."""

    __tablename__ = "auth_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    kind: Mapped[str] = mapped_column(String(8), default="api", server_default="api")
    # The network address it was issued to (for the owner's list of sessions).
    client_addr: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Refreshed as the token is used (at most once a minute): the idle timeout counts from it.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Login attempts counted under one key: an (account, client) pair, an account, a client.

    ``key`` is a keyed digest of what it counts (the username typed, the client address or
    both), so the table never holds what people typed. An attempt is *reserved* by one
    atomic upsert before the password is checked, and released again when it succeeds, so
    parallel guesses cannot all slip in before any of them is counted.
    """

    __tablename__ = "login_throttle"

    key: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class KnownClient(Base):
    """A client an account logged in from successfully: failures elsewhere do not slow it.

    Both columns are keyed digests, like ``LoginThrottle.key``.
    """

    __tablename__ = "login_known_clients"

    account_key: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    client_key: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    last_success_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
