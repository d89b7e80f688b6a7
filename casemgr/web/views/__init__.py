"""The page controllers, one module per group of users."""

from __future__ import annotations

from typing import Any

from casemgr.web.views.account import AccountPages
from casemgr.web.views.audit import AuditPages
from casemgr.web.views.auth import AuthPages
from casemgr.web.views.care import CasePages, MyPages
from casemgr.web.views.home import HomePages
from casemgr.web.views.school import AdminPages, ReportPages, SchoolPages
from casemgr.web.views.screening import RoundPages, ScreeningPages

PAGES: list[Any] = [
    AuthPages,
    HomePages,
    AccountPages,
    AuditPages,
    MyPages,
    CasePages,
    ScreeningPages,
    RoundPages,
    SchoolPages,
    AdminPages,
    ReportPages,
]
