"""Request and answer shapes of the account routes (``/api/v1/me``, ``/api/v1/users``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from casemgr.accounts.policy import MAX_PASSWORD_LENGTH
from casemgr.authz import Role
from casemgr.schools.services import ClassOut

Password = Annotated[str, Meta(max_length=MAX_PASSWORD_LENGTH)]


class RoleIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    school_id: uuid.UUID | None = None


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=200)]
    display_name: Annotated[str, Meta(min_length=1, max_length=100)]
    roles: Annotated[list[RoleIn], Meta(min_length=1, max_length=8)]
    class_ids: Annotated[list[uuid.UUID], Meta(max_length=50)] = []


class OneTimeLoginOut(msgspec.Struct):
    id: uuid.UUID
    username: str
    one_time_password: str


class AccountItem(msgspec.Struct):
    id: uuid.UUID
    username: str
    display_name: str
    roles: list[dict[str, object]]
    class_ids: list[uuid.UUID]
    totp_enrolled: bool
    password_change_required: bool
    disabled: bool
    created_at: datetime


class AccountItems(msgspec.Struct):
    items: list[AccountItem]


class PasswordChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Password
    new_password: Password


class TotpOut(msgspec.Struct):
    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpConfirmIn(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, Meta(min_length=1, max_length=16)]


class MeOut(msgspec.Struct):
    user: dict[str, object]
    schools: list[dict[str, object]]
    classes: list[ClassOut]


class SessionItem(msgspec.Struct):
    id: uuid.UUID
    kind: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime
    client_addr: str | None
    current: bool


class SessionItems(msgspec.Struct):
    items: list[SessionItem]
