from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from casemgr.accounts import services
from casemgr.accounts.policy import MAX_PASSWORD_LENGTH
from casemgr.dependencies import CryptoDep, CurrentPrincipal, DbSession, Sessions, SettingsDep


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

    @post("/logout", status_code=HTTP_204_NO_CONTENT)
    async def logout(self, db_session: DbSession, principal: CurrentPrincipal) -> None:
        await services.logout(db_session, principal)
