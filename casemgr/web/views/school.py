"""School leaders' and bureau admins' pages: classes, pairings, the care summary, accounts,
the roster import, the school-year rollover, transfers between schools and the yearly
home-visit requirements with their progress.

Lists and changes go through ``schools.services``, ``accounts.admin``, ``care.services``,
``care.visits``, ``students.transfers`` and ``reports.services``. The roster import and the
rollover take the steps of their API routes (``schools.controllers``): the decision, the
service, the audited refusal.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from casemgr.accounts import admin
from casemgr.authz import Permission, Role
from casemgr.care import services as care
from casemgr.care import visits
from casemgr.care.schemas import VisitProgress, VisitRequirementIn
from casemgr.context import RequestContext
from casemgr.dependencies import Ctx, DbSession
from casemgr.errors import Conflict, DomainError, InvalidInput
from casemgr.reports import services as reports
from casemgr.schools import rollover as rollovers
from casemgr.schools import services as schools
from casemgr.schools.controllers import TransferIn
from casemgr.schools.models import School
from casemgr.schoolyear import is_school_year
from casemgr.students import imports, transfers
from casemgr.web.errors import redirect
from casemgr.web.forms import FORM_TYPES, Form, build
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
        progress = (
            await visits.school_visit_progress(ctx, school.id)
            if ctx.may_ever(Permission.VISIT_PROGRESS_READ)
            else None
        )
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
            progress=progress,
            totals=progress_totals(progress),
            can_transfer=ctx.may_ever(Permission.TRANSFER_READ),
            can_set_visits=ctx.may_ever(Permission.VISIT_REQUIREMENT_MANAGE),
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
                await asyncio.to_thread(
                    imports.open_roster, io.BytesIO(content), imports.sniff(content[:4])
                ),
                actor=actor,
            )
        except imports.RosterRejected as refused:
            await imports.record_refusal(ctx.session, refused, actor=actor, school_id=school_id)
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

    # -- transfers between schools (``/api/v1/students/transfers``) ----------------------

    @get("/transfers")
    async def transfer_list(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        done = request.query_params.get("done") or ""
        return await render_transfers(request, ctx, notice=TRANSFER_NOTICES.get(done))

    @post("/transfers", opt=FORM)
    async def request_transfer(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[Any]:
        """Ask for a student by national ID: one answer whether or not the ID is known
        (``transfers.request_transfer`` does the same work either way)."""
        form = await Form.read(request)
        try:
            national_id = form.text("national_id").strip()
            if not national_id:
                raise InvalidInput.field("national_id", "must not be blank")
            data = build(
                TransferIn,
                {"national_id": national_id, "to_class_id": str(form.id("to_class_id"))},
            )
            await transfers.request_transfer(
                ctx, national_id=data.national_id, to_class_id=data.to_class_id
            )
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_transfers(request, ctx, status=422, errors=exc.extra["errors"])
        return redirect("/school/transfers?done=requested")

    @post("/transfers/{transfer_id:uuid}/approve", opt=FORM)
    async def approve_transfer(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        transfer_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        decision = transfers.approve_transfer(ctx, transfer_id)
        return await decide_transfer(request, ctx, db_session, decision, "approved")

    @post("/transfers/{transfer_id:uuid}/decline", opt=FORM)
    async def decline_transfer(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        transfer_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        decision = transfers.decline_transfer(ctx, transfer_id)
        return await decide_transfer(request, ctx, db_session, decision, "declined")

    # -- yearly home-visit requirements and progress ---------------------------------------

    @get("/visits")
    async def visit_requirements(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        # An address that names no school of the reader is answered by the service: 404.
        school_id = school_of(ctx, request) or uuid.UUID(int=0)
        done = request.query_params.get("done") == "1"
        return await render_visits(
            request,
            ctx,
            school_id,
            request.query_params.get("school_year") or None,
            notice=N_("The requirements were saved.") if done else None,
        )

    @post("/visits", opt=FORM)
    async def set_visit_requirements(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[Any]:
        """The steps of ``PUT /api/v1/schools/{id}/visit-requirements``, from a form."""
        form = await Form.read(request)
        school_id = form.id("school_id")
        year = form.optional("school_year")
        try:
            if year is not None and not is_school_year(year):
                raise InvalidInput.field("school_year", "must look like 2026-2027")
            data = build(
                VisitRequirementIn,
                {
                    "class_teacher_visits": visits_per_student(form, "class_teacher_visits"),
                    "mentor_visits": visits_per_student(form, "mentor_visits"),
                    "school_year": year,
                },
            )
            saved = await visits.set_visit_requirement(ctx, school_id, data)
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_visits(
                request, ctx, school_id, None, status=422, errors=exc.extra["errors"]
            )
        return redirect(
            f"/school/visits?school_id={school_id}&school_year={saved.school_year}&done=1"
        )


TRANSFER_NOTICES = {
    "requested": N_(
        "The request was sent. The leader of the student's present school decides;"
        " it shows here as approved once they have."
    ),
    "approved": N_("The transfer was approved: the student now belongs to the other school."),
    "declined": N_("The request was declined."),
}
TRANSFER_STATUS = {
    "pending": N_("Waiting for a decision"),
    "approved": N_("Approved"),
    "declined": N_("Declined"),
    "closed": N_("Closed without approval"),
}


async def render_transfers(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    *,
    status: int = 200,
    notice: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> Response[str]:
    """Requests for students of the reader's schools (to decide), and the reader's own.

    The list is ``transfers.list_transfers``: the asking school learns nothing of a
    request until it is approved, so its own requests show as waiting or closed only.
    """
    items = await transfers.list_transfers(ctx)
    names = {s.id: s.name for s in await schools.schools_within_reach(ctx)}
    own = ctx.authorizer.schools_holding(ctx.principal, Permission.TRANSFER_REQUEST) or frozenset()
    classes = []
    for school_id in sorted(own, key=lambda s: names.get(s, "")):
        classes += await schools.classes_within_reach(ctx, school_id)
    return page(
        request,
        "school/transfers.html",
        status=status,
        principal=ctx.principal,
        title=N_("Transfers between schools"),
        incoming=[i for i in items if i.direction == "incoming"],
        outgoing=[i for i in items if i.direction == "outgoing"],
        classes=classes,
        class_names={c.id: c.name for c in classes},
        school_names=names if len(own) > 1 else {},
        statuses=TRANSFER_STATUS,
        notice=notice,
        errors=errors or [],
    )


MAX_VISITS = 12  # per student and school year (``VisitRequirementIn``)


def visits_per_student(form: Form, name: str) -> int:
    """A number of visits per student and year, as the API takes it (0 to 12)."""
    text = form.text(name).strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_VISITS:
        raise InvalidInput.field(name, "a whole number from 0 to 12")
    return int(text)


@dataclass(frozen=True)
class ProgressTotals:
    students: int
    students_done: int
    visits: int


def progress_totals(progress: VisitProgress | None) -> ProgressTotals | None:
    """The whole school's counts (the sum of its classes')."""
    if progress is None:
        return None
    items = progress.items
    return ProgressTotals(
        students=sum(i.students for i in items),
        students_done=sum(i.students_done for i in items),
        visits=sum(i.visits for i in items),
    )


async def render_visits(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    school_id: uuid.UUID,
    school_year: str | None,
    *,
    status: int = 200,
    notice: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> Response[str]:
    """The school's requirement for a school year (default: the current one), the form to
    change it, and this year's progress of the class teachers (counts only)."""
    requirement = await visits.get_visit_requirement(ctx, school_id, school_year)
    school = await ctx.session.get(School, school_id)
    assert school is not None  # the service answered 404 otherwise
    progress = (
        await visits.school_visit_progress(ctx, school_id)
        if ctx.may_ever(Permission.VISIT_PROGRESS_READ)
        else None
    )
    return page(
        request,
        "school/visits.html",
        status=status,
        principal=ctx.principal,
        title=N_("Home visits"),
        school=SchoolView(school.id, school.name),
        requirement=requirement,
        progress=progress,
        totals=progress_totals(progress),
        max_visits=MAX_VISITS,
        notice=notice,
        errors=errors or [],
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


async def decide_transfer(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    db_session: Any,
    decision: Awaitable[Any],
    done: str,
) -> Response[Any]:
    """Approve or decline (``decision``, not awaited yet); a request decided already shows
    the transfers page with the conflict."""
    try:
        await decision
    except Conflict as exc:
        await db_session.rollback()
        return await render_transfers(
            request, ctx, status=409, errors=[{"field": "", "message": exc.detail}]
        )
    return redirect(f"/school/transfers?done={done}")
