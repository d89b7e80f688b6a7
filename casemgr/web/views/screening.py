"""The counselor's pages: the review queue and the review of one result.

Scores, answers and bands are shown here only: ``screening.services`` lets counselors
alone read them. Teachers get the guidance text a review writes, on the case file.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from casemgr import clock
from casemgr.authz import Permission, Role
from casemgr.context import RequestContext
from casemgr.dependencies import Ctx, DbSession
from casemgr.errors import Conflict, DomainError, InvalidInput
from casemgr.schools import services as schools_service
from casemgr.screening import imports as screening_imports
from casemgr.screening import services as screening
from casemgr.screening.controllers import RESULTS_MAX_BODY_BYTES
from casemgr.screening.instruments import Catalogue
from casemgr.screening.schemas import ConsentIn, ReviewIn, RoundIn
from casemgr.students import services as students
from casemgr.tabular import CSV, XLSX
from casemgr.web.errors import redirect
from casemgr.web.forms import FORM_TYPES, Form, build
from casemgr.web.i18n import N_
from casemgr.web.render import page

FORM = {"content_types": FORM_TYPES}
UPLOAD = {"content_types": ("multipart/form-data",)}
DECISIONS = ("granted", "declined", "withdrawn")
OUTCOMES = ("no_concern", "monitor", "support", "refer", "urgent")


def catalogue_of(state: State, ctx: RequestContext) -> Catalogue:
    """The instruments the application loaded at start-up (the API's own catalogue)."""
    catalogue: Catalogue = state.instruments
    return catalogue


class ScreeningPages(Controller):
    path = "/screening"
    include_in_schema = False

    @get("/")
    async def queue(self, request: Request[Any, Any, Any], ctx: Ctx, state: State) -> Response[str]:
        if not ctx.may_ever(Permission.SCREENING_RESULT_REVIEW):
            await ctx.require(Permission.SCREENING_RESULT_REVIEW, resource_type="page")
        items = await screening.review_queue(ctx, catalogue_of(state, ctx))
        return page(
            request,
            "screening/queue.html",
            principal=ctx.principal,
            title=N_("Screening review"),
            items=items,
            done=request.query_params.get("done") == "1",
        )

    @get("/results/{result_id:uuid}")
    async def result(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        state: State,
        result_id: FromPath[uuid.UUID],
    ) -> Response[str]:
        return await render_result(request, ctx, state, result_id)

    @post("/results/{result_id:uuid}/review", opt=FORM)
    async def review(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        state: State,
        db_session: DbSession,
        result_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            data = build(
                ReviewIn,
                {
                    "outcome": form.text("outcome"),
                    "notes": form.text("notes"),
                    "guidance_for_teachers": form.optional("guidance_for_teachers"),
                    "recheck_on": form.optional("recheck_on"),
                },
            )
            await screening.review_result(ctx, result_id, data)
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_result(
                request, ctx, state, result_id, status=422, errors=exc.extra["errors"]
            )
        return redirect("/screening?done=1")


class RoundPages(Controller):
    """Screening rounds: counselors create them and upload results; class teachers record
    their students' guardians' consent."""

    path = "/screening/rounds"
    include_in_schema = False

    @get("/")
    async def rounds(
        self, request: Request[Any, Any, Any], ctx: Ctx, state: State
    ) -> Response[str]:
        return await render_rounds(request, ctx, state)

    @post("/", opt=FORM)
    async def create_round(
        self, request: Request[Any, Any, Any], ctx: Ctx, state: State, db_session: DbSession
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            data = build(
                RoundIn,
                {
                    "school_id": form.text("school_id"),
                    "name": form.text("name"),
                    "instrument": form.text("instrument"),
                    "school_year": form.text("school_year"),
                    "class_ids": [str(c) for c in form.ids("class_ids")],
                    "opens_on": form.text("opens_on"),
                    "closes_on": form.text("closes_on"),
                },
            )
            await screening.create_round(ctx, data, catalogue_of(state, ctx))
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            return await render_rounds(request, ctx, state, status=exc.status, exc=exc)
        return redirect("/screening/rounds?done=round")

    @post("/{round_id:uuid}/consents", opt=FORM)
    async def record_consent(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        state: State,
        db_session: DbSession,
        round_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            data = build(
                ConsentIn,
                {
                    "student_id": form.text("student_id"),
                    "decision": form.text("decision"),
                    "guardian_name": form.text("guardian_name"),
                    "recorded_on": form.text("recorded_on"),
                },
            )
            await screening.record_consent(ctx, round_id, data)
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            return await render_rounds(request, ctx, state, status=exc.status, exc=exc)
        return redirect("/screening/rounds?done=consent")

    @post(
        "/{round_id:uuid}/results",
        opt=UPLOAD,
        request_max_body_size=RESULTS_MAX_BODY_BYTES,
    )
    async def upload_results(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        state: State,
        db_session: DbSession,
        round_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        """The steps of ``POST /api/v1/screening/rounds/{id}/results``, from a form."""
        form = await Form.read(request)
        upload = form.file("file")
        decision = await screening_imports.authorize_import(ctx, round_id)
        if upload is None:
            return await render_rounds(
                request,
                ctx,
                state,
                status=422,
                rejected=[{"row": 0, "error": N_("Choose a file to upload.")}],
            )
        content = await upload.read()
        media_type = XLSX if content[:4] == b"PK\x03\x04" else CSV
        try:
            outcome = await screening_imports.import_results(
                ctx, round_id, io.BytesIO(content), media_type, catalogue_of(state, ctx), decision
            )
        except DomainError as exc:
            await db_session.rollback()
            return await render_rounds(
                request,
                ctx,
                state,
                status=exc.status,
                rejected=exc.extra.get("rejected") or [{"row": 0, "error": exc.detail}],
            )
        return redirect(f"/screening/rounds?imported={outcome.imported}")


async def render_rounds(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    state: State,
    *,
    status: int = 200,
    exc: DomainError | None = None,
    rejected: list[dict[str, Any]] | None = None,
) -> Response[str]:
    from casemgr.web.views.care import my_rosters, names_of

    rounds = await screening.list_rounds(ctx)
    runs = ctx.may_ever(Permission.SCREENING_ROUND_CREATE)
    imports_results = ctx.may_ever(Permission.SCREENING_RESULT_IMPORT)
    records = ctx.may_ever(Permission.CONSENT_RECORD)
    schools: list[Any] = []
    classes: list[Any] = []
    if runs:
        schools = [s for s in await schools_service.schools_within_reach(ctx)]
        for school in schools:
            classes += await schools_service.classes_within_reach(ctx, school.id)
    rosters = await my_rosters(ctx) if Role.CLASS_TEACHER in ctx.principal.roles else []
    errors = None
    if isinstance(exc, InvalidInput):
        errors = exc.extra.get("errors")
    elif exc is not None:
        errors = [{"field": "", "message": exc.detail}]
    done = request.query_params.get("done")
    imported = request.query_params.get("imported")
    return page(
        request,
        "screening/rounds.html",
        status=status,
        principal=ctx.principal,
        title=N_("Screening rounds"),
        rounds=rounds,
        runs=runs,
        imports_results=imports_results,
        records=records,
        schools=schools,
        classes=classes,
        class_names={c.id: c.name for c in classes} | {r.id: r.name for r in rosters},
        instruments=sorted(catalogue_of(state, ctx).instruments) if runs else [],
        entries=names_of(rosters),
        decisions=DECISIONS,
        today=clock.today(),
        errors=errors or [],
        rejected=rejected or [],
        notice={
            "round": N_("The round was created."),
            "consent": N_("The decision was recorded."),
        }.get(done or ""),
        imported=int(imported) if imported and imported.isdigit() else None,
    )


async def render_result(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    state: State,
    result_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[dict[str, str]] | None = None,
) -> Response[str]:
    result = await screening.get_result(ctx, result_id, catalogue_of(state, ctx))
    student = await students.get_student(ctx, result.student_id)
    return page(
        request,
        "screening/result.html",
        status=status,
        principal=ctx.principal,
        title=N_("Screening result"),
        result=result,
        student=student,
        outcomes=OUTCOMES,
        errors=errors or [],
    )
