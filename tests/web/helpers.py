"""Driving the pages the way a browser does: cookies, the CSRF field, forms."""

from __future__ import annotations

import re
from typing import Any

from tests.factories import PASSWORD, Account

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: Any, account: Account, *, password: str = PASSWORD) -> Any:
    """Sign in through the form; returns the response to the form post (303 on success)."""
    page = client.get("/")
    data = {
        "csrf_token": csrf_of(page.text),
        "username": account.username,
        "password": password,
    }
    if account.totp_secret:
        data["totp"] = account.totp_now()
    return client.post("/sign-in", data=data, follow_redirects=False)


def post_form(client: Any, path: str, data: dict[str, Any], *, from_page: str) -> Any:
    """Post a form as the page at ``from_page`` would (its CSRF token included)."""
    token = csrf_of(client.get(from_page).text)
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
