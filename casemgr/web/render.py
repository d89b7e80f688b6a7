"""Rendering pages: one Jinja environment, autoescaped everywhere, translated per request.

Every template is escaped whatever its name (``autoescape=True``), so a name or a note
with markup in it is shown as text. The language is the reader's (cookie), looked up by
the gettext callables from the template's own context, so one environment serves both.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from litestar import Request, Response
from litestar.enums import MediaType

from casemgr.authz import Principal, Role
from casemgr.web import i18n
from casemgr.web.i18n import N_
from casemgr.web.sessions import (
    LANG_COOKIE,
    PRE_SESSION_COOKIE,
    PRE_SESSION_SECONDS,
    cookie_name,
    csrf_secret,
    csrf_token_for,
    is_secure,
    new_pre_session,
    read_cookie,
    set_cookie,
)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@pass_context
def _gettext(context: Context, message: str) -> str:
    return i18n.translations(context.get("lang", i18n.DEFAULT_LANG)).ugettext(message)


@pass_context
def _ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return i18n.translations(context.get("lang", i18n.DEFAULT_LANG)).ungettext(singular, plural, n)


@pass_context
def _date(context: Context, value: Any, form: str = "medium") -> str:
    return i18n.show_date(value, context.get("lang", i18n.DEFAULT_LANG), form)


@pass_context
def _datetime(context: Context, value: Any) -> str:
    return i18n.show_datetime(value, context.get("lang", i18n.DEFAULT_LANG))


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("casemgr.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_gettext, ngettext=_ngettext, newstyle=True
    )
    env.filters["date"] = _date
    env.filters["datetime"] = _datetime
    env.globals["role_labels"] = ROLE_LABELS
    env.globals["field_labels"] = FIELD_LABELS
    env.globals["labels"] = LABELS
    env.globals["task_labels"] = TASK_LABELS
    return env


ROLE_LABELS = {
    "class_teacher": N_("Class teacher"),
    "teacher": N_("Teacher (mentor)"),
    "counselor": N_("Counselor"),
    "school_leader": N_("School leader"),
    "bureau_admin": N_("Bureau administrator"),
    "auditor": N_("Auditor"),
}
# Form fields as services name them in their errors.
FIELD_LABELS = {
    "current_password": N_("Current password"),
    "new_password": N_("New password"),
    "new_password_again": N_("New password again"),
    "code": N_("Six-digit code"),
    "notes": N_("Notes"),
    "occurred_on": N_("Date"),
    "visited_on": N_("Date of the visit"),
    "follow_up_on": N_("Follow up on"),
    "kind": N_("Kind"),
    "mode": N_("How"),
    "participant_ids": N_("Who took part"),
    "student_id": N_("Student"),
    "case_id": N_("Case file"),
    "outcome": N_("Outcome"),
    "guidance_for_teachers": N_("Guidance for teachers"),
    "reason": N_("Reason"),
    "username": N_("Username"),
    "display_name": N_("Name"),
    "role": N_("Role"),
    "name": N_("Name"),
    "grade": N_("Grade"),
    "school_year": N_("School year"),
    "to_school_year": N_("New school year"),
    "file": N_("File"),
    "category": N_("Care category"),
    "since": N_("Since"),
    "review_on": N_("Review on"),
    "ended_on": N_("Ended on"),
    "details": N_("Details"),
    "text": N_("Guidance"),
    "recheck_on": N_("Re-check on"),
    "mentor_ids": N_("Mentors"),
    "lead_id": N_("Lead mentor"),
    "goals": N_("Goals"),
    "starts_on": N_("Start date"),
    "national_id": N_("National ID number"),
    "to_class_id": N_("Class to join"),
    "school_id": N_("School"),
    "class_teacher_visits": N_("Visits per student by class teachers"),
    "mentor_visits": N_("Visits per student by mentors"),
}
# Values of closed sets (categories, kinds, modes, outcomes, statuses).
LABELS = {
    "orphan": N_("Orphan"),
    "single_parent": N_("Single-parent family"),
    "disability": N_("Disability"),
    "financial_hardship": N_("Family in financial hardship"),
    "left_behind": N_("Left-behind child"),
    "conversation": N_("Conversation"),
    "academic": N_("Help with studies"),
    "material": N_("Material support"),
    "psychological": N_("Emotional support"),
    "family_contact": N_("Contact with the family"),
    "other": N_("Other"),
    "in_person": N_("In person"),
    "phone": N_("By phone"),
    "video": N_("By video call"),
    "no_concern": N_("No concern"),
    "monitor": N_("Keep an eye on"),
    "support": N_("Support"),
    "refer": N_("Refer to a specialist"),
    "urgent": N_("Urgent"),
    "one_to_one": N_("One mentor"),
    "many_to_one": N_("Several mentors"),
    "open": N_("Open"),
    "closed": N_("Closed"),
    "allow": N_("Allowed"),
    "deny": N_("Refused"),
    "female": N_("Female"),
    "male": N_("Male"),
    "granted": N_("Agreed"),
    "declined": N_("Declined"),
    "withdrawn": N_("Withdrawn"),
    # audit purposes
    "authentication": N_("Signing in"),
    "oversight": N_("Oversight"),
    "care_programme": N_("Care programme"),
    "administration": N_("Administration"),
    "key_management": N_("Key management"),
    "emergency_access": N_("Emergency access"),
    "retention": N_("Retention"),
}

TASK_LABELS = {
    "support_follow_up": N_("Follow up on support"),
    "follow_up": N_("Follow up on support"),
    "guidance_follow_up": N_("Act on the counselor's guidance"),
    "urgent_review": N_("Act on the counselor's guidance"),
    "case_review": N_("Review the case file"),
    "category_review": N_("Review a care category"),
    "home_visit": N_("Home visits"),
    "screening_review": N_("Review a screening result"),
    "screening_recheck": N_("Screening re-check"),
}


def lang_of(request: Request[Any, Any, Any]) -> str:
    value = request.cookies.get(cookie_name(LANG_COOKIE, is_secure(request)))
    return i18n.pick(value)


def gettext(request: Request[Any, Any, Any], message: str) -> str:
    """Translate a message from Python code (marked with ``N_`` for extraction)."""
    return i18n.translations(lang_of(request)).ugettext(message)


def landing_path(principal: Principal) -> str:
    return LANDING[principal.primary_role] if principal.primary_role else "/"


LANDING = {
    Role.CLASS_TEACHER: "/my",
    Role.TEACHER: "/my",
    Role.COUNSELOR: "/screening",
    Role.SCHOOL_LEADER: "/school",
    Role.BUREAU_ADMIN: "/admin",
    Role.AUDITOR: "/audit",
}


def navigation(principal: Principal | None) -> list[tuple[str, str]]:
    """Links for the roles the reader holds: (path, message id)."""
    if principal is None or principal.restricted:
        return []
    roles = principal.roles
    links: list[tuple[str, str]] = []
    if roles & {Role.CLASS_TEACHER, Role.TEACHER}:
        links.append(("/my", N_("My students")))
    if roles & {Role.CLASS_TEACHER, Role.TEACHER, Role.COUNSELOR}:
        links.append(("/cases", N_("Case files")))
    if Role.COUNSELOR in roles:
        links.append(("/screening", N_("Screening review")))
    if roles & {Role.COUNSELOR, Role.SCHOOL_LEADER, Role.CLASS_TEACHER}:
        links.append(("/screening/rounds", N_("Screening rounds")))
    if Role.SCHOOL_LEADER in roles:
        links.append(("/school", N_("School")))
    if roles & {Role.SCHOOL_LEADER, Role.COUNSELOR}:
        links.append(("/reports/care-summary", N_("Care summary")))
    if Role.BUREAU_ADMIN in roles:
        links.append(("/admin", N_("Schools and accounts")))
    if Role.AUDITOR in roles:
        links.append(("/audit", N_("Access log")))
    links.append(("/account", N_("My account")))
    return links


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    principal: Principal | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response[str]:
    """Render ``template`` for the reader: language, CSRF token, navigation, no-store."""
    lang = lang_of(request)
    secret = csrf_secret(request)
    fresh_pre_session = None
    if secret is None:
        secret = fresh_pre_session = new_pre_session()
    values = {
        "lang": lang,
        "html_lang": i18n.HTML_LANG[lang],
        "csrf_token": csrf_token_for(secret),
        "principal": principal,
        "nav": navigation(principal),
        "current_path": request.url.path,
        "is_htmx": request.headers.get("hx-request") == "true",
        **context,
    }
    html = environment().get_template(template).render(values)
    response: Response[str] = Response(
        html,
        status_code=status,
        media_type=MediaType.HTML,
        headers={**NO_STORE, **(headers or {})},
    )
    if fresh_pre_session is not None and read_cookie(request, PRE_SESSION_COOKIE) is None:
        set_cookie(
            response, request, PRE_SESSION_COOKIE, fresh_pre_session, max_age=PRE_SESSION_SECONDS
        )
    return response
