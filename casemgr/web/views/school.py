"""School leaders' and bureau admins' pages: classes, pairings, the care summary, accounts,
the roster import and the school-year rollover.

Lists and changes go through ``schools.services``, ``accounts.admin``, ``care.services``
and ``reports.services``. The roster import and the rollover take the steps of their API
routes (``schools.controllers``): the decision, the service, the audited refusal.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from casemgr import audit
from casemgr.accounts import admin
from casemgr.authz import Permission, Role
from casemgr.care import services as care
from casemgr.context import RequestContext
from casemgr.dependencies import Ctx, DbSession
from casemgr.errors import Conflict, DomainError, InvalidInput
from casemgr.reports import services as reports
from casemgr.schools import rollover as rollovers
from casemgr.schools import services as schools
from casemgr.schools.models import School
from casemgr.students import imports
from casemgr.web.errors import redirect
from casemgr.web.forms import FORM_TYPES, Form
from casemgr.web.i18n import N_
from casemgr.web.render import page

FORM = {"content_types": FORM_TYPES}
UPLOAD = {"content_types": ("multipart/form-data",)}
# Roles a school leader may give (SPEC §6); a bureau admin may give every role.
LEADER_GRANTS = ("class_teacher", "teacher", "counselor")
ALL_GRANTS = tuple(r.value for r in Role)


def school_of(ctx: RequestContext, request: Request[Any, Any, Any]) -> uuid.UUID | None:
    """The school a page is about: ``?school_id=`` or the reader's own (leaders)."""
    raw = request.query_params.get("school_id") or ""
    if raw:
        try:
            return uuid.UUID(raw)
        except ValueError:
            return None
    own = [
        g.school_id
        for g in ctx.principal.grants
        if g.school_id is not None and g.role in (Role.SCHOOL_LEADER, Role.COUNSELOR)
    ]
    return own[0] if own else None


@dataclass(frozen=True)
class SchoolView:
    id: uuid.UUID
    name: str


@dataclass
class Bar:
    category: str
    count: int | None
    suppressed: bool
    width: int  # percent of the widest bar


def bars_of(summary: reports.CareSummary) -> list[Bar]:
    shown = [c.count for c in summary.cells if c.count is not None]
    top = max(shown, default=0) or 1
    return [
        Bar(c.category, c.count, c.suppressed, 0 if c.count is None else round(100 * c.count / top))
        for c in summary.cells
    ]


async def require_school(ctx: RequestContext, school_id: uuid.UUID | None) -> School:
    """The school, or 404 (audited) like the API when it is missing or out of reach."""
    school = await ctx.session.get(School, school_id) if school_id else None
    await ctx.require(
        Permission.CLASS_MANAGE,
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        exists=school is not None,
    )
    assert school is not None
    return school


class SchoolPages(Controller):
    path = "/school"
    include_in_schema = False

    @get("/")
    async def overview(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        school = await require_school(ctx, school_of(ctx, request))
        classes = await schools.classes_within_reach(ctx, school.id)
        pairings = (
            await care.school_pairings(ctx, school.id)
            if ctx.may_ever(Permission.PAIRING_CREATE)
            else []
        )
        summary = await reports.care_summary(ctx, school.id)
        return page(
            request,
            "school/overview.html",
            principal=ctx.principal,
            title=N_("School"),
            school=school,
            classes=classes,
            pairings=pairings,
            summary=summary,
            bars=bars_of(summary),
            class_names={c.id: c.name for c in classes},
        )

    @post("/classes", opt=FORM)
    async def create_class(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[Any]:
        form = await Form.read(request)
        school_id = form.id("school_id")
        try:
            grade_text = form.text("grade").strip()
            if not grade_text.isdigit():
                raise InvalidInput.field("grade", "a grade from 1 to 12")
            await schools.create_class(
                ctx,
                school_id,
                name=form.text("name"),
                grade=int(grade_text),
                school_year=form.text("school_year").strip(),
            )
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            return form_error(request, exc)
        return redirect(f"/school?school_id={school_id}")

    @get("/accounts")
    async def accounts(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        school_id = school_of(ctx, request)
        return await render_accounts(request, ctx, school_id)

    @post("/accounts", opt=FORM)
    async def create_account(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[Any]:
        form = await Form.read(request)
        raw_school = form.text("school_id").strip()
        school_id = uuid.UUID(raw_school) if raw_school else None
        try:
            role = Role(form.text("role"))
        except ValueError:
            return form_error(request, InvalidInput.field("role", "choose one from the list"))
        try:
            created = await admin.create_account(
                ctx,
                username=form.text("username"),
                display_name=form.text("display_name"),
                roles=[
                    admin.RoleRequest(
                        role, None if role in (Role.BUREAU_ADMIN, Role.AUDITOR) else school_id
                    )
                ],
                class_ids=form.ids("class_ids"),
            )
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            return form_error(request, exc)
        # The one-time password is shown once, on this answer, never in a URL or a log.
        return await render_accounts(request, ctx, school_id, created=created)

    @post("/accounts/{user_id:uuid}/disable", opt=FORM)
    async def disable(
        self, request: Request[Any, Any, Any], ctx: Ctx, user_id: FromPath[uuid.UUID]
    ) -> Response[Any]:
        form = await Form.read(request)
        await admin.disable_account(ctx, user_id)
        school = form.text("school_id").strip()
        return redirect("/school/accounts" + (f"?school_id={uuid.UUID(school)}" if school else ""))

    @post("/accounts/{user_id:uuid}/reset", opt=FORM)
    async def reset(
        self, request: Request[Any, Any, Any], ctx: Ctx, user_id: FromPath[uuid.UUID]
    ) -> Response[Any]:
        form = await Form.read(request)
        login = await admin.reset_password(ctx, user_id)
        school = form.text("school_id").strip()
        return await render_accounts(
            request, ctx, uuid.UUID(school) if school else None, created=login
        )

    @get("/import")
    async def import_form(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        school = await require_school(ctx, school_of(ctx, request))
        return page(
            request,
            "school/import.html",
            principal=ctx.principal,
            title=N_("Import the roster"),
            school=school,
            result=None,
            rejected=[],
        )

    @post(
        "/import",
        opt=UPLOAD,
        request_max_body_size=imports.MAX_BODY_BYTES,
    )
    async def import_roster(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        form = await Form.read(request)
        school_id = form.id("school_id")
        school = await ctx.session.get(School, school_id)
        decision = await ctx.require(
            Permission.STUDENT_IMPORT,
            resource_type="school",
            resource_id=school_id,
            school_id=school_id,
            exists=school is not None,
        )
        assert school is not None
        # What the page shows of the school, kept apart from the ORM object: a refusal
        # below commits its audit event on its own, which expires loaded objects.
        school_view = SchoolView(school.id, school.name)
        upload = form.file("file")
        if upload is None:
            return page(
                request,
                "school/import.html",
                status=422,
                principal=ctx.principal,
                title=N_("Import the roster"),
                school=school_view,
                result=None,
                rejected=[{"row": 0, "error": N_("Choose a file to upload.")}],
            )
        content = await upload.read()
        actor = ctx.actor(decision, school_id)
        try:
            result = await imports.import_roster(
                ctx.session,
                ctx.crypto,
                school_id,
                imports.open_roster(io.BytesIO(content), imports.sniff(content[:4])),
                actor=actor,
            )
        except imports.RosterRejected as refused:
            await audit.record_denial(
                ctx.session,
                audit.Action.STUDENT_IMPORT,
                actor=actor,
                resource_type="school",
                resource_id=school_id,
                school_id=school_id,
                detail={"status": 422, "rejected": len(refused.extra["rejected"])},
            )
            return page(
                request,
                "school/import.html",
                status=422,
                principal=ctx.principal,
                title=N_("Import the roster"),
                school=school_view,
                result=None,
                rejected=refused.extra["rejected"],
            )
        return page(
            request,
            "school/import.html",
            principal=ctx.principal,
            title=N_("Import the roster"),
            school=school_view,
            result=result,
            rejected=[],
        )

    @get("/rollover")
    async def rollover_form(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        school = await require_school(ctx, school_of(ctx, request))
        return page(
            request,
            "school/rollover.html",
            principal=ctx.principal,
            title=N_("New school year"),
            school=school,
            plan=None,
            errors=[],
        )

    @post("/rollover", opt=FORM)
    async def rollover(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[str]:
        form = await Form.read(request)
        school_id = form.id("school_id")
        school = await ctx.session.get(School, school_id)
        decision = await ctx.require(
            Permission.SCHOOL_YEAR_ROLLOVER,
            resource_type="school",
            resource_id=school_id,
            school_id=school_id,
            exists=school is not None,
        )
        assert school is not None
        dry_run = form.text("confirm") != "yes"
        try:
            plan = await rollovers.rollover(
                ctx.session,
                ctx.crypto,
                school_id,
                form.text("to_school_year").strip(),
                dry_run=dry_run,
                actor=ctx.actor(decision, school_id),
            )
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            errors = exc.extra.get("errors") if isinstance(exc, InvalidInput) else None
            return page(
                request,
                "school/rollover.html",
                status=exc.status,
                principal=ctx.principal,
                title=N_("New school year"),
                school=school,
                plan=None,
                errors=errors or [{"field": "", "message": exc.detail}],
            )
        return page(
            request,
            "school/rollover.html",
            principal=ctx.principal,
            title=N_("New school year"),
            school=school,
            plan=plan,
            errors=[],
        )


def form_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[str]:
    from casemgr.web.errors import error_page

    errors = exc.extra.get("errors") if isinstance(exc, InvalidInput) else None
    return error_page(request, exc.status, errors or [{"field": "", "message": exc.detail}])


async def render_accounts(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    school_id: uuid.UUID | None,
    *,
    created: admin.OneTimeLogin | None = None,
) -> Response[str]:
    accounts = await admin.list_accounts(ctx, school_id)
    bureau = Role.BUREAU_ADMIN in ctx.principal.roles
    all_schools = await schools.schools_within_reach(ctx)
    classes = await schools.classes_within_reach(ctx, school_id) if school_id else []
    return page(
        request,
        "school/accounts.html",
        principal=ctx.principal,
        title=N_("Accounts"),
        accounts=accounts,
        school_id=school_id,
        schools=all_schools,
        classes=classes,
        grantable=ALL_GRANTS if bureau else LEADER_GRANTS,
        created=created,
    )


class AdminPages(Controller):
    """The bureau admin's landing page: schools, and the way to their accounts."""

    path = "/admin"
    include_in_schema = False

    @get("/")
    async def overview(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        if not ctx.may_ever(Permission.SCHOOL_MANAGE):
            await ctx.require(Permission.SCHOOL_MANAGE, resource_type="page")
        all_schools = await schools.schools_within_reach(ctx)
        summary = await reports.care_summary(ctx, None)
        return page(
            request,
            "school/admin.html",
            principal=ctx.principal,
            title=N_("Schools and accounts"),
            schools=all_schools,
            summary=summary,
            bars=bars_of(summary),
        )

    @post("/schools", opt=FORM)
    async def create_school(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            await schools.create_school(
                ctx,
                name=form.text("name"),
                code=form.text("code"),
                stage=form.optional("stage"),
            )
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            return form_error(request, exc)
        return redirect("/admin")


class ReportPages(Controller):
    path = "/reports"
    include_in_schema = False

    @get("/care-summary")
    async def care_summary(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        raw = request.query_params.get("school_id") or ""
        school_id = None
        if raw:
            try:
                school_id = uuid.UUID(raw)
            except ValueError:
                school_id = uuid.UUID(int=0)  # answered "not found" by the service
        summary = await reports.care_summary(ctx, school_id)
        return page(
            request,
            "school/report.html",
            principal=ctx.principal,
            title=N_("Care summary"),
            summary=summary,
            bars=bars_of(summary),
        )
