"""The reader's own account: password, second factor, sessions (``accounts.selfservice``).

These pages also serve an account that must first change a one-time password or enrol a
second factor (``RESTRICTED_OK``), as ``/api/v1/me*`` do; every other page sends such a
reader here.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from casemgr.accounts import selfservice
from casemgr.authz import SECOND_FACTOR_ROLES
from casemgr.dependencies import (
    RESTRICTED_OK,
    CryptoDep,
    Ctx,
    CurrentPrincipal,
    DbSession,
    Sessions,
    SettingsDep,
)
from casemgr.errors import Conflict, InvalidInput, TooManyAttempts
from casemgr.web.errors import redirect
from casemgr.web.forms import FORM_TYPES, Form
from casemgr.web.render import N_, page

SELF_SERVICE = {RESTRICTED_OK: True}
SELF_SERVICE_FORM = {RESTRICTED_OK: True, "content_types": FORM_TYPES}


def qr_data_uri(svg: str) -> str:
    """The QR code as an image address: an SVG in <img> runs nothing, whatever it holds."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


class AccountPages(Controller):
    path = "/account"
    include_in_schema = False

    async def _render(
        self,
        request: Request[Any, Any, Any],
        ctx: Any,
        *,
        status: int = 200,
        notice: str | None = None,
        errors: list[dict[str, str]] | None = None,
        enrolment: selfservice.Enrolment | None = None,
    ) -> Response[str]:
        me = await selfservice.who_am_i(ctx)
        sessions = await selfservice.live_sessions(ctx)
        needs_factor = bool(ctx.principal.roles & SECOND_FACTOR_ROLES)
        return page(
            request,
            "account.html",
            principal=ctx.principal,
            title=N_("My account"),
            me=me,
            sessions=sessions,
            needs_factor=needs_factor,
            notice=notice,
            errors=errors or [],
            enrolment=enrolment,
            qr=qr_data_uri(enrolment.qr_svg) if enrolment else None,
        )

    @get("/", opt=SELF_SERVICE)
    async def account(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        return await self._render(request, ctx)

    @post("/password", opt=SELF_SERVICE_FORM)
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        principal: CurrentPrincipal,
        sessions: Sessions,
        crypto: CryptoDep,
        settings: SettingsDep,
        ctx: Ctx,
    ) -> Response[Any]:
        form = await Form.read(request)
        # Argon2 runs in the service with no transaction of this request open.
        await db_session.commit()
        try:
            new_password = form.text("new_password")
            if new_password != form.text("new_password_again"):
                raise InvalidInput.field("new_password_again", "does not match the new password")
            await selfservice.change_password(
                sessions,
                crypto,
                settings,
                principal,
                current_password=form.text("current_password"),
                new_password=new_password,
            )
        except (InvalidInput, Conflict, TooManyAttempts) as exc:
            await db_session.rollback()
            errors = exc.extra.get("errors") if isinstance(exc, InvalidInput) else None
            return await self._render(
                request,
                ctx,
                status=exc.status,
                errors=errors or [{"field": "", "message": exc.detail}],
            )
        return redirect("/account/done?what=password")

    @post("/totp", opt=SELF_SERVICE_FORM)
    async def start_totp(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        enrolment = await selfservice.start_totp(ctx)
        return await self._render(request, ctx, enrolment=enrolment)

    @post("/totp/confirm", opt=SELF_SERVICE_FORM)
    async def confirm_totp(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        principal: CurrentPrincipal,
        sessions: Sessions,
        crypto: CryptoDep,
        settings: SettingsDep,
        ctx: Ctx,
    ) -> Response[Any]:
        form = await Form.read(request)
        await db_session.commit()
        try:
            await selfservice.confirm_totp(
                sessions, crypto, settings, principal, form.text("code")[:16]
            )
        except (InvalidInput, Conflict, TooManyAttempts) as exc:
            await db_session.rollback()
            errors = exc.extra.get("errors") if isinstance(exc, InvalidInput) else None
            return await self._render(
                request,
                ctx,
                status=exc.status,
                errors=errors or [{"field": "", "message": exc.detail}],
            )
        return redirect("/account/done?what=totp")

    @get("/done", opt=SELF_SERVICE)
    async def done(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[Any]:
        """After a change: on to the start page once nothing else is outstanding."""
        if not ctx.principal.restricted:
            return redirect("/home")
        what = request.query_params.get("what")
        notice = {
            "password": N_("Your password was changed."),
            "totp": N_("Your second factor is enrolled."),
        }.get(what or "")
        return await self._render(request, ctx, notice=notice)

    @post("/sessions/{session_id:uuid}/end", opt=SELF_SERVICE_FORM)
    async def end_session(self, session_id: FromPath[uuid.UUID], ctx: Ctx) -> Response[Any]:
        await selfservice.end_session(ctx, session_id)
        return redirect("/account" if session_id != ctx.principal.token_id else "/")
