"""Signing in and out, and the reader's language."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State

from casemgr.accounts import services as accounts
from casemgr.dependencies import CryptoDep, DbSession, Sessions, SettingsDep
from casemgr.errors import InvalidInput, LoginFailed, TooManyAttempts
from casemgr.web import i18n
from casemgr.web.deps import client_of
from casemgr.web.errors import redirect
from casemgr.web.forms import FORM_TYPES, Form, safe_next
from casemgr.web.render import N_, landing_path, page
from casemgr.web.sessions import (
    LANG_COOKIE,
    LANG_SECONDS,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    delete_cookie,
    read_cookie,
    resolve_session,
    set_cookie,
    sign_in,
)

FORM = {"content_types": FORM_TYPES}


class AuthPages(Controller):
    path = "/"
    include_in_schema = False

    @get("/")
    async def sign_in_page(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State
    ) -> Response[Any]:
        """The sign-in form; a reader who is signed in goes on to their landing page."""
        token = read_cookie(request, SESSION_COOKIE)
        if token is not None:
            principal = await resolve_session(db_session, token, state.settings, None)
            if principal is not None:
                target = "/account" if principal.restricted else landing_path(principal)
                return redirect(safe_next(request.query_params.get("next"), target))
        return page(
            request,
            "sign_in.html",
            next=safe_next(request.query_params.get("next"), ""),
            error=None,
            username="",
        )

    @post("/sign-in", opt=FORM)
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        sessions: Sessions,
        crypto: CryptoDep,
        settings: SettingsDep,
    ) -> Response[Any]:
        form = await Form.read(request)
        next_path = form.next_path("")
        username = ""
        try:
            username = form.text("username")
            result = await sign_in(
                sessions,
                crypto,
                settings,
                username=username,
                password=form.text("password")[:1024],
                totp=form.optional("totp"),
                client=client_of(request),
                previous=read_cookie(request, SESSION_COOKIE),
            )
        except (LoginFailed, InvalidInput):
            # One answer for every failure, as the API gives (no field tells which).
            return page(
                request,
                "sign_in.html",
                status=401,
                next=next_path,
                username=username if len(username) <= 64 else "",
                error=N_("The username, password or one-time code is not correct."),
            )
        except TooManyAttempts as exc:
            return page(
                request,
                "sign_in.html",
                status=429,
                headers={"Retry-After": str(exc.retry_after)},
                next=next_path,
                username="",
                error=N_("Too many failed attempts. Please wait a while before trying again."),
            )
        # A one-time password or a missing second factor: /home sends on to /account.
        response = redirect(safe_next(next_path, "/home"))
        set_cookie(response, request, SESSION_COOKIE, result.token)
        delete_cookie(response, request, PRE_SESSION_COOKIE)
        return response

    @post("/sign-out", opt=FORM)
    async def sign_out(
        self, request: Request[Any, Any, Any], db_session: DbSession, state: State
    ) -> Response[Any]:
        token = read_cookie(request, SESSION_COOKIE)
        if token is not None:
            principal = await resolve_session(db_session, token, state.settings, client_of(request))
            if principal is not None:
                await accounts.logout(db_session, principal)
        response = redirect("/")
        delete_cookie(response, request, SESSION_COOKIE)
        # Tell the browser to drop what it kept of this site's pages (the back button).
        response.headers["Clear-Site-Data"] = '"cache"'
        return response

    @post("/language", opt=FORM)
    async def language(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await Form.read(request)
        lang = i18n.pick(form.text("lang"))
        response = redirect(form.next_path("/"))
        set_cookie(response, request, LANG_COOKIE, lang, max_age=LANG_SECONDS)
        return response
