"""The auditor's pages: the access log with filters, verification, emergency accesses.

They take the same steps as ``/api/v1/audit/*`` (``casemgr.audit.controllers``): the
``audit:read`` / ``audit:verify`` decision, ``audit.list_events`` or ``audit.verify_chain``,
and an event recording the read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from casemgr import audit
from casemgr.audit import unusual
from casemgr.audit.services import EventFilter
from casemgr.authz import Permission
from casemgr.care import emergency
from casemgr.care.schemas import EmergencyGrantOut
from casemgr.context import RequestContext
from casemgr.dependencies import Ctx, DbSession
from casemgr.errors import Conflict, InvalidInput
from casemgr.web import i18n
from casemgr.web.errors import error_page, redirect
from casemgr.web.forms import FORM_TYPES, Form
from casemgr.web.render import N_, page

PAGE_SIZE = 50
OUTCOMES = ("allow", "deny")


@dataclass
class Filters:
    actor_id: str = ""
    student_id: str = ""
    action: str = ""
    outcome: str = ""
    since: str = ""
    until: str = ""
    errors: list[dict[str, str]] | None = None

    def query(self) -> EventFilter:
        return EventFilter(
            actor_id=_uuid(self.actor_id),
            student_id=_uuid(self.student_id),
            action=self.action or None,
            outcome=self.outcome or None,
            since=_day_start(self.since),
            until=_day_start(self.until, 1),
        )

    def as_query_string(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if k != "errors" and v}


def _uuid(value: str) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


def _day_start(value: str, plus_days: int = 0) -> datetime | None:
    """The start of a day in the service's time zone (``until`` is the day after)."""
    if not value:
        return None
    day = date.fromisoformat(value) + timedelta(days=plus_days)
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(i18n.TIME_ZONE))


def read_filters(request: Request[Any, Any, Any]) -> Filters:
    params = request.query_params
    found = Filters()
    errors = []
    for name in ("actor_id", "student_id"):
        value = (params.get(name) or "").strip()
        if value:
            try:
                setattr(found, name, str(uuid.UUID(value)))
            except ValueError:
                errors.append({"field": name, "message": N_("is not an id")})
    action = (params.get("action") or "").strip()
    if action in {a.value for a in audit.Action} or action in {p.value for p in Permission}:
        found.action = action
    elif action:
        errors.append({"field": "action", "message": N_("choose one from the list")})
    outcome = params.get("outcome") or ""
    found.outcome = outcome if outcome in OUTCOMES else ""
    for name in ("since", "until"):
        value = (params.get(name) or "").strip()
        if value:
            try:
                date.fromisoformat(value)
                setattr(found, name, value)
            except ValueError:
                errors.append({"field": name, "message": N_("must be a date (YYYY-MM-DD)")})
    found.errors = errors
    return found


def action_choices() -> list[str]:
    """Every action an event can name: audit actions and the permissions refused."""
    return sorted({a.value for a in audit.Action} | {p.value for p in Permission})


class AuditPages(Controller):
    path = "/audit"
    include_in_schema = False

    @get("/")
    async def access_log(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        decision = await ctx.require(Permission.AUDIT_READ, resource_type="audit")
        filters = read_filters(request)
        cursor_raw = request.query_params.get("cursor") or ""
        cursor = int(cursor_raw) if cursor_raw.isascii() and cursor_raw.isdigit() else None
        items: list[dict[str, Any]] = []
        next_cursor = None
        if not filters.errors:
            items, next_cursor = await audit.list_events(
                ctx.session, filters.query(), limit=PAGE_SIZE, before_seq=cursor
            )
        await ctx.audit(
            audit.Action.AUDIT_READ,
            resource_type="audit",
            decision=decision,
            detail={"count": len(items)},
        )
        emergency = await emergency_accesses(ctx)
        unusual_items = await unusual_accesses(ctx)
        return page(
            request,
            "audit/log.html",
            principal=ctx.principal,
            title=N_("Access log"),
            filters=filters,
            items=items,
            next_cursor=next_cursor,
            actions=action_choices(),
            outcomes=OUTCOMES,
            emergency=emergency,
            unusual=unusual_items,
            unusual_kinds=UNUSUAL_KINDS,
            unusual_outcomes=UNUSUAL_OUTCOMES,
            field_names={
                "actor_id": N_("Who (account id)"),
                "student_id": N_("Student id"),
                "action": N_("Action"),
                "since": N_("From"),
                "until": N_("To"),
            },
        )

    @get("/verify")
    async def verify(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        decision = await ctx.require(Permission.AUDIT_VERIFY, resource_type="audit")
        result = await audit.verify_chain(
            ctx.session,
            ctx.crypto.keyring.audit_public_keys,
            ctx.settings.checkpoint_file,
            seal_deadline=ctx.settings.seal_deadline,
        )
        await ctx.audit(
            audit.Action.AUDIT_VERIFY,
            resource_type="audit",
            decision=decision,
            detail={"ok": result.ok, "checked": result.checked},
        )
        template = "audit/verify_fragment.html" if _is_htmx(request) else "audit/verify.html"
        return page(
            request, template, principal=ctx.principal, title=N_("Verify the log"), result=result
        )

    @post("/emergency/{grant_id:uuid}/review", opt={"content_types": FORM_TYPES})
    async def review_emergency(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        grant_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            await emergency.review_grant(ctx, grant_id, form.optional("note"))
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            errors = exc.extra.get("errors") if isinstance(exc, InvalidInput) else None
            return error_page(request, exc.status, errors)
        return redirect("/audit")

    @post("/unusual/{finding_id:str}/review", opt={"content_types": FORM_TYPES})
    async def review_unusual(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        finding_id: FromPath[str],
    ) -> Response[Any]:
        """Unusual access (issue 11): the outcome chosen in the list marks it reviewed."""
        form = await Form.read(request)
        outcome = form.optional("outcome")
        try:
            if outcome not in unusual.OUTCOMES:
                raise InvalidInput.field("outcome", N_("choose one from the list"))
            await unusual.review(ctx, finding_id, unusual.ReviewIn(outcome=outcome))
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            errors = exc.extra.get("errors") if isinstance(exc, InvalidInput) else None
            return error_page(request, exc.status, errors)
        return redirect("/audit")


# Unusual access (issue 11): what each rule found, and how a review ends.
UNUSUAL_KINDS = {
    "many_reads": N_("Many students' records read within an hour"),
    "many_denials": N_("Many refusals within an hour"),
    "off_hours": N_("Access outside school hours"),
    "account_reset": N_("Password reset by another person"),
}
UNUSUAL_OUTCOMES = {
    "explained": N_("Explained"),
    "follow_up": N_("Needs follow-up"),
}


async def unusual_accesses(ctx: RequestContext) -> list[dict[str, Any]]:
    """Unusual access of the last seven days not reviewed yet; emergency accesses have their
    own list on the page."""
    found = await unusual.list_unusual(ctx, reviewed=False)
    zone = ZoneInfo(i18n.TIME_ZONE)
    return [
        {
            "finding": finding,
            # The day for the access log's filter (From / To), in the pages' time zone.
            "day": finding.window_start.astimezone(zone).date().isoformat(),
            "last_day": finding.last_at.astimezone(zone).date().isoformat(),
        }
        for finding in found.items
        if finding.kind != "emergency_access"
    ]


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


async def emergency_accesses(ctx: RequestContext) -> list[EmergencyGrantOut]:
    """Emergency accesses not reviewed yet, newest first (SPEC P6)."""
    return await emergency.list_grants(ctx, reviewed=False)
