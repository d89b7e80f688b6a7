from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from casemgr.accounts import admin, selfservice, services
from casemgr.accounts.policy import MAX_PASSWORD_LENGTH
from casemgr.accounts.schemas import (
    AccountItem,
    AccountItems,
    MeOut,
    OneTimeLoginOut,
    PasswordChangeIn,
    SessionItem,
    SessionItems,
    TotpConfirmIn,
    TotpOut,
    UserIn,
)
from casemgr.authz import Role
from casemgr.dependencies import (
    RESTRICTED_OK,
    CryptoDep,
    Ctx,
    CurrentPrincipal,
    DbSession,
    Sessions,
    SettingsDep,
)


class LoginIn(msgspec.Struct):
    # Every field is optional here so that a missing one fails like a wrong one: 401.
    # Over-long values are refused (422), never cut: a cut password would match another.
    username: Annotated[str, msgspec.Meta(max_length=200)] = ""
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_LENGTH)] = ""
    totp: Annotated[str, msgspec.Meta(max_length=16)] | None = None


class LoginOut(msgspec.Struct):
    token: str
    expires_at: datetime
    user: dict[str, Any]


# Routes a token of a one-time password (or of a missing required factor) may use.
SELF_SERVICE = {RESTRICTED_OK: True}


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ("auth",)

    @post("/login", status_code=HTTP_200_OK, exclude_from_auth=True)
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginIn],
        sessions: Sessions,
        crypto: CryptoDep,
        settings: SettingsDep,
    ) -> LoginOut:
        client = request.client.host if request.client else "unknown"
        result = await services.login(
            sessions,
            crypto,
            settings,
            username=data.username,
            password=data.password,
            totp=data.totp,
            client=client,
        )
        return LoginOut(token=result.token, expires_at=result.expires_at, user=result.user)

    @post("/logout", status_code=HTTP_204_NO_CONTENT, opt=SELF_SERVICE)
    async def logout(self, db_session: DbSession, principal: CurrentPrincipal) -> None:
        await services.logout(db_session, principal)


class MeController(Controller):
    """The caller's own account (SPEC §6 ``/api/v1/me*``)."""

    path = "/api/v1/me"
    tags = ("me",)

    @get("", opt=SELF_SERVICE)
    async def me(self, ctx: Ctx) -> MeOut:
        found = await selfservice.who_am_i(ctx)
        return MeOut(user=found.user, schools=found.schools, classes=found.classes)

    @post("/password", status_code=HTTP_204_NO_CONTENT, opt=SELF_SERVICE)
    async def change_password(
        self,
        data: JSONBody[PasswordChangeIn],
        db_session: DbSession,
        principal: CurrentPrincipal,
        sessions: Sessions,
        crypto: CryptoDep,
        settings: SettingsDep,
    ) -> None:
        # Argon2 runs twice below: let go of the request's transaction (on SQLite, the
        # write lock) first; the service uses short transactions of its own.
        await db_session.commit()
        await selfservice.change_password(
            sessions,
            crypto,
            settings,
            principal,
            current_password=data.current_password,
            new_password=data.new_password,
        )

    @post("/totp", status_code=HTTP_200_OK, opt=SELF_SERVICE)
    async def start_totp(self, ctx: Ctx) -> TotpOut:
        enrolment = await selfservice.start_totp(ctx)
        return TotpOut(**asdict(enrolment))

    @post("/totp/confirm", status_code=HTTP_204_NO_CONTENT, opt=SELF_SERVICE)
    async def confirm_totp(
        self,
        data: JSONBody[TotpConfirmIn],
        db_session: DbSession,
        principal: CurrentPrincipal,
        sessions: Sessions,
        crypto: CryptoDep,
        settings: SettingsDep,
    ) -> None:
        await db_session.commit()
        await selfservice.confirm_totp(sessions, crypto, settings, principal, data.code)

    @get("/sessions")
    async def sessions(self, ctx: Ctx) -> SessionItems:
        found = await selfservice.live_sessions(ctx)
        return SessionItems(items=[SessionItem(**asdict(s)) for s in found])

    @delete("/sessions/{session_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def end_session(self, session_id: FromPath[uuid.UUID], ctx: Ctx) -> None:
        await selfservice.end_session(ctx, session_id)


class UserController(Controller):
    """Account administration by bureau admins and school leaders."""

    path = "/api/v1/users"
    tags = ("users",)

    @post("", status_code=HTTP_201_CREATED)
    async def create(self, data: JSONBody[UserIn], ctx: Ctx) -> OneTimeLoginOut:
        created = await admin.create_account(
            ctx,
            username=data.username,
            display_name=data.display_name,
            roles=[admin.RoleRequest(Role(r.role), r.school_id) for r in data.roles],
            class_ids=data.class_ids,
        )
        return OneTimeLoginOut(**asdict(created))

    @get("")
    async def list(self, ctx: Ctx, school_id: FromQuery[uuid.UUID | None] = None) -> AccountItems:
        found = await admin.list_accounts(ctx, school_id)
        return AccountItems(items=[AccountItem(**asdict(a)) for a in found])

    @post("/{user_id:uuid}/disable", status_code=HTTP_204_NO_CONTENT)
    async def disable(self, user_id: FromPath[uuid.UUID], ctx: Ctx) -> None:
        await admin.disable_account(ctx, user_id)

    @post("/{user_id:uuid}/reset-password", status_code=HTTP_200_OK)
    async def reset_password(self, user_id: FromPath[uuid.UUID], ctx: Ctx) -> OneTimeLoginOut:
        return OneTimeLoginOut(**asdict(await admin.reset_password(ctx, user_id)))
