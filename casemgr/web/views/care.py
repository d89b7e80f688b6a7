"""Teachers' pages: my students and my tasks, a student, a case file (一人一册).

Every list and record comes from the services the API uses (``students.services``,
``care.services``, ``accounts.selfservice``), which decide, decrypt and audit.

Rosters show the same fields and the same actions for every student (SPEC P3): whether
a student has a file shows only on the list of files and on the student's own page, to
readers whose role reaches files.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import anyio
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from sqlalchemy import select

from casemgr import clock
from casemgr.accounts import selfservice
from casemgr.authz import Permission, Role
from casemgr.care import records, visits
from casemgr.care import services as care
from casemgr.care import tasks as tasks_service
from casemgr.care.schemas import CategoryEndIn, CategoryIn, HomeVisitIn, SupportLogIn, TaskItem
from casemgr.context import RequestContext
from casemgr.dependencies import Ctx, DbSession
from casemgr.errors import InvalidInput
from casemgr.screening import services as screening
from casemgr.screening.schemas import CounselingNoteIn
from casemgr.students import services as students
from casemgr.students.models import Student
from casemgr.students.schemas import RosterEntry
from casemgr.web import i18n
from casemgr.web.errors import redirect
from casemgr.web.forms import FORM_TYPES, Form, build
from casemgr.web.pdf import render_case_pdf
from casemgr.web.render import N_, NO_STORE, lang_of, page

FORM = {"content_types": FORM_TYPES}
SUPPORT_KINDS = ("conversation", "academic", "material", "psychological", "family_contact", "other")
VISIT_MODES = ("in_person", "phone", "video")


@dataclass
class ClassRoster:
    id: uuid.UUID
    name: str
    entries: list[RosterEntry]


async def my_rosters(ctx: RequestContext) -> list[ClassRoster]:
    """The classes a teacher works with, each with the students the teacher reaches.

    A class teacher's own classes; a mentor's paired students, grouped by their classes
    (the roster service then lists only the paired students of each).
    """
    principal = ctx.principal
    class_ids = set(principal.class_ids)
    if Role.TEACHER in principal.roles and principal.paired_student_ids:
        # Which classes the paired students are in (ids only, nothing decrypted here).
        class_ids |= set(
            await ctx.session.scalars(
                select(Student.class_id).where(Student.id.in_(principal.paired_student_ids))
            )
        )
    me = await selfservice.who_am_i(ctx)
    names = {c.id: c.name for c in me.classes}
    rosters = []
    for class_id in sorted(class_ids, key=lambda c: names.get(c, "")):
        if class_id not in names and class_id in principal.class_ids:
            continue  # a class of an earlier school year (clean slate, SPEC P3)
        entries = await students.roster(ctx, class_id)
        rosters.append(ClassRoster(class_id, names.get(class_id, ""), entries))
    return rosters


def names_of(rosters: list[ClassRoster]) -> dict[uuid.UUID, RosterEntry]:
    return {e.id: e for r in rosters for e in r.entries}


class MyPages(Controller):
    """The class teacher's and mentor's landing page."""

    path = "/my"
    include_in_schema = False

    @get("/")
    async def my_students(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        if not ctx.may_ever(Permission.HOME_VISIT_WRITE):
            await ctx.require(Permission.HOME_VISIT_WRITE, resource_type="page")
        done = N_("Saved.") if request.query_params.get("done") else None
        return await render_my(request, ctx, notice=done)

    @post("/support-logs", opt=FORM)
    async def quick_support_log(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[Any]:
        """Quick entry from the landing page: the file is chosen in the form."""
        form = await Form.read(request)
        try:
            case_id = form.id("case_id")
            await care.add_support_log(ctx, case_id, support_log_in(form))
        except InvalidInput as exc:
            await db_session.rollback()
            return await _after_form(request, ctx, errors=exc.extra["errors"])
        return await _after_form(request, ctx, notice=N_("Support was recorded."))

    @post("/home-visits", opt=FORM)
    async def quick_home_visit(
        self, request: Request[Any, Any, Any], ctx: Ctx, db_session: DbSession
    ) -> Response[Any]:
        """A home visit, for any student the teacher reaches (it says nothing of care)."""
        form = await Form.read(request)
        try:
            student_id = form.id("student_id")
            data = build(
                HomeVisitIn,
                {
                    "visited_on": form.text("visited_on"),
                    "mode": form.text("mode"),
                    "notes": form.text("notes"),
                    # The reader took part; colleagues who came too are added by id.
                    "participant_ids": [ctx.principal.user_id, *form.ids("participant_ids")],
                },
            )
            await visits.add_home_visit(ctx, student_id, data)
        except InvalidInput as exc:
            await db_session.rollback()
            return await _after_form(request, ctx, errors=exc.extra["errors"])
        return await _after_form(request, ctx, notice=N_("The home visit was recorded."))


def support_log_in(form: Form) -> SupportLogIn:
    return build(
        SupportLogIn,
        {
            "occurred_on": form.text("occurred_on"),
            "kind": form.text("kind"),
            "notes": form.text("notes"),
            "follow_up_on": form.optional("follow_up_on"),
        },
    )


async def render_my(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    *,
    status: int = 200,
    notice: str | None = None,
    errors: list[dict[str, str]] | None = None,
    fragment: bool = False,
) -> Response[str]:
    rosters = await my_rosters(ctx)
    entries = names_of(rosters)
    files = await care.list_cases(ctx, status="open")
    tasks = await my_tasks(ctx)
    context: dict[str, Any] = {
        "title": N_("My students and my tasks"),
        "rosters": rosters,
        "entries": entries,
        "files": files,
        "tasks": tasks,
        "today": clock.today(),
        "support_kinds": SUPPORT_KINDS,
        "visit_modes": VISIT_MODES,
        "notice": notice,
        "errors": errors or [],
        "can_read_student": ctx.may_ever(Permission.STUDENT_READ),
    }
    template = "care/my_fragment.html" if fragment else "care/my.html"
    return page(request, template, principal=ctx.principal, status=status, **context)


async def my_tasks(ctx: RequestContext) -> list[TaskItem]:
    return await tasks_service.my_tasks(ctx)


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


class CasePages(Controller):
    path = "/"
    include_in_schema = False

    @get("/cases")
    async def cases(self, request: Request[Any, Any, Any], ctx: Ctx) -> Response[str]:
        files = await care.list_cases(ctx)
        rosters = (
            await my_rosters(ctx)
            if ctx.principal.roles
            & {
                Role.CLASS_TEACHER,
                Role.TEACHER,
            }
            else []
        )
        return page(
            request,
            "care/cases.html",
            principal=ctx.principal,
            title=N_("Case files"),
            files=files,
            entries=names_of(rosters),
        )

    @get("/cases/{case_id:uuid}")
    async def case(
        self, request: Request[Any, Any, Any], ctx: Ctx, case_id: FromPath[uuid.UUID]
    ) -> Response[str]:
        return await render_case(request, ctx, case_id)

    @post("/cases/{case_id:uuid}/support-logs", opt=FORM)
    async def add_support_log(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        case_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            await care.add_support_log(ctx, case_id, support_log_in(form))
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_case(request, ctx, case_id, status=422, errors=exc.extra["errors"])
        return redirect(f"/cases/{case_id}?done=support")

    @post("/cases/{case_id:uuid}/guidance", opt=FORM)
    async def write_guidance(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        case_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            await care.write_guidance(ctx, case_id, form.text("text"))
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_case(request, ctx, case_id, status=422, errors=exc.extra["errors"])
        return redirect(f"/cases/{case_id}?done=guidance")

    @post("/cases/{case_id:uuid}/export.pdf", opt=FORM)
    async def export_pdf(
        self, request: Request[Any, Any, Any], ctx: Ctx, case_id: FromPath[uuid.UUID]
    ) -> Response[bytes]:
        """一人一册 as a PDF, named by the file's neutral code; the export is audited.

        A POST with the form's CSRF token: another site cannot make a signed-in browser
        export (and so leave an export in the trail) by linking here.
        """
        case = await care.get_case(ctx, case_id)
        _, document = await records.export_student(ctx, case.student_id)
        me = await selfservice.who_am_i(ctx)
        viewer = str(me.user.get("display_name") or me.user["username"])
        lang = lang_of(request)
        content = await anyio.to_thread.run_sync(
            functools.partial(
                render_case_pdf,
                document,
                str(case_id),
                viewer=viewer,
                exported_at=clock.now(),
                lang=lang,
                gettext=i18n.translations(lang).ugettext,
            )
        )
        return Response(
            content,
            status_code=200,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="{case.code}.pdf"',
                **NO_STORE,
            },
        )

    @post("/cases/{case_id:uuid}/counseling-notes", opt=FORM)
    async def add_counseling_note(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        case_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        """Counselors only (the service decides): notes nobody else ever reads."""
        form = await Form.read(request)
        try:
            case = await care.get_case(ctx, case_id)
            data = build(CounselingNoteIn, {"notes": form.text("notes")})
            await screening.add_counseling_note(ctx, case.student_id, data)
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_case(request, ctx, case_id, status=422, errors=exc.extra["errors"])
        return redirect(f"/cases/{case_id}?done=note")

    @post("/cases/{case_id:uuid}/close", opt=FORM)
    async def close_case(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        case_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            await care.close_case(ctx, case_id, form.text("reason"))
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_case(request, ctx, case_id, status=422, errors=exc.extra["errors"])
        return redirect(f"/cases/{case_id}")

    @post("/care-categories/{category_id:uuid}/end", opt=FORM)
    async def end_category(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        category_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        case_id = form.id("case_id")
        try:
            data = build(
                CategoryEndIn, {"ended_on": form.text("ended_on"), "reason": form.text("reason")}
            )
            await care.end_category(ctx, category_id, data)
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_case(request, ctx, case_id, status=422, errors=exc.extra["errors"])
        return redirect(f"/cases/{case_id}")

    @get("/students/{student_id:uuid}")
    async def student(
        self, request: Request[Any, Any, Any], ctx: Ctx, student_id: FromPath[uuid.UUID]
    ) -> Response[str]:
        return await render_student(request, ctx, student_id)

    @post("/students/{student_id:uuid}/cases", opt=FORM)
    async def open_case(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        student_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        """Open a file (or record a care category, which opens one if none is open)."""
        form = await Form.read(request)
        try:
            category = form.optional("category")
            if category is None:
                case = await care.open_case(ctx, student_id, form.text("reason"))
            else:
                data = build(
                    CategoryIn,
                    {
                        "category": category,
                        "since": form.text("since"),
                        "details": form.text("reason"),
                        "review_on": form.optional("review_on"),
                    },
                )
                _, case = await care.add_category(ctx, student_id, data)
        except InvalidInput as exc:
            await db_session.rollback()
            return await render_student(
                request, ctx, student_id, status=422, errors=exc.extra["errors"]
            )
        return redirect(f"/cases/{case.id}")


CATEGORIES = ("orphan", "single_parent", "disability", "financial_hardship", "left_behind")


async def render_student(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    student_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[dict[str, str]] | None = None,
) -> Response[str]:
    details = await students.get_student(ctx, student_id)
    files = (
        await care.list_cases(ctx, student_id=student_id)
        if ctx.may_ever(Permission.CASE_READ)
        else []
    )
    return page(
        request,
        "care/student.html",
        status=status,
        principal=ctx.principal,
        title=N_("Student"),
        student=details,
        files=files,
        today=clock.today(),
        visit_modes=VISIT_MODES,
        categories=CATEGORIES,
        errors=errors or [],
        can_visit=ctx.may_ever(Permission.HOME_VISIT_WRITE),
        can_open=ctx.may_ever(Permission.CASE_WRITE)
        and ctx.may_ever(Permission.CARE_CATEGORY_WRITE)
        and not any(f.status == "open" for f in files),
        can_add_category=ctx.may_ever(Permission.CARE_CATEGORY_WRITE),
    )


async def _after_form(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    *,
    notice: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> Response[Any]:
    """Quick entry: HTMX gets the refreshed tasks and forms, a plain form the whole page.

    HTMX swaps only successful answers, so a refused entry comes back as 200 with its
    errors shown; without HTMX it is a 422 page.
    """
    htmx = _is_htmx(request)
    if not htmx and not errors:
        return redirect("/my?done=1")
    return await render_my(
        request,
        ctx,
        notice=notice,
        errors=errors,
        fragment=htmx,
        status=422 if errors and not htmx else 200,
    )


async def render_case(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    case_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[dict[str, str]] | None = None,
) -> Response[str]:
    include_earlier = request.query_params.get("earlier") == "1"
    case = await care.get_case(ctx, case_id, include_earlier=include_earlier)
    student = (
        await students.get_student(ctx, case.student_id)
        if ctx.may_ever(Permission.STUDENT_READ)
        else None
    )
    notes = (
        (await screening.counseling_notes(ctx, case.student_id))[0]
        if ctx.may_ever(Permission.COUNSELING_NOTE_READ)
        else None
    )
    done = request.query_params.get("done")
    notice = {
        "support": N_("Support was recorded."),
        "guidance": N_("The guidance was saved."),
        "visit": N_("The home visit was recorded."),
        "note": N_("The counseling note was saved."),
    }.get(done or "")
    return page(
        request,
        "care/case.html",
        status=status,
        principal=ctx.principal,
        title=N_("Case file"),
        case=case,
        student=student,
        timeline=case_timeline(case),
        today=clock.today(),
        support_kinds=SUPPORT_KINDS,
        notice=notice,
        errors=errors or [],
        can_log=ctx.may_ever(Permission.SUPPORT_LOG_WRITE) and case.status == "open",
        can_guide=ctx.may_ever(Permission.GUIDANCE_WRITE) and case.status == "open",
        can_export=ctx.may_ever(Permission.STUDENT_READ) and ctx.may_ever(Permission.CASE_READ),
        can_close=ctx.may_ever(Permission.CASE_WRITE) and case.status == "open",
        counseling_notes=notes,
        can_end_category=ctx.may_ever(Permission.CARE_CATEGORY_WRITE),
        include_earlier=include_earlier,
    )


@dataclass
class TimelineEntry:
    on: date
    kind: str
    label: str
    value: str | None
    text: str | None


def case_timeline(case: Any) -> list[TimelineEntry]:
    """Everything in the file the reader may see, newest first, in the reader's words."""
    entries: list[TimelineEntry] = [
        TimelineEntry(case.opened_on, "case_opened", N_("File opened"), None, case.open_reason)
    ]
    for c in case.care_categories or []:
        entries.append(
            TimelineEntry(c.since, "category", N_("Care category"), c.category, c.details)
        )
        if c.ended_on:
            entries.append(
                TimelineEntry(
                    c.ended_on,
                    "category_ended",
                    N_("Care category ended"),
                    c.category,
                    c.end_reason,
                )
            )
    for p in case.pairings or []:
        entries.append(
            TimelineEntry(p.starts_on, "pairing", N_("Pairing started"), p.mode, p.goals)
        )
        if p.ends_on:
            entries.append(
                TimelineEntry(p.ends_on, "pairing_ended", N_("Pairing ended"), None, p.end_reason)
            )
    for log in case.support_logs or []:
        entries.append(
            TimelineEntry(log.occurred_on, "support", N_("Support"), log.kind, log.notes)
        )
    for visit in case.home_visits or []:
        entries.append(
            TimelineEntry(visit.visited_on, "visit", N_("Home visit"), visit.mode, visit.notes)
        )
    for note in case.guidance or []:
        entries.append(
            TimelineEntry(
                note.created_at.date(), "guidance", N_("Guidance for teachers"), None, note.text
            )
        )
    if case.closed_on:
        entries.append(
            TimelineEntry(case.closed_on, "case_closed", N_("File closed"), None, case.close_reason)
        )
    entries.sort(key=lambda e: e.on, reverse=True)
    return entries
