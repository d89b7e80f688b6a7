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
from casemgr.care import emergency, records, visits
from casemgr.care import services as care
from casemgr.care import tasks as tasks_service
from casemgr.care.schemas import (
    CategoryEndIn,
    CategoryIn,
    EmergencyAccessIn,
    HomeVisitIn,
    PairingEndIn,
    PairingIn,
    SupportLogIn,
    TaskItem,
)
from casemgr.context import RequestContext
from casemgr.dependencies import Ctx, DbSession
from casemgr.errors import Conflict, DomainError, InvalidInput, NotFound
from casemgr.screening import services as screening
from casemgr.screening.schemas import CounselingNoteIn
from casemgr.students import services as students
from casemgr.students.models import Student
from casemgr.students.schemas import RosterEntry
from casemgr.web import i18n
from casemgr.web.errors import error_page, redirect
from casemgr.web.forms import FORM_TYPES, Form, build
from casemgr.web.pdf import render_case_pdf
from casemgr.web.render import N_, NO_STORE, lang_of, page

FORM = {"content_types": FORM_TYPES}
SUPPORT_KINDS = ("conversation", "academic", "material", "psychological", "family_contact", "other")
VISIT_MODES = ("in_person", "phone", "video")
PAIRING_MODES = ("one_to_one", "many_to_one")


def errors_of(exc: DomainError) -> list[dict[str, str]]:
    """What a refused form shows: the fields named, or the service's message."""
    if isinstance(exc, InvalidInput):
        errors: list[dict[str, str]] = exc.extra["errors"]
        return errors
    return [{"field": "", "message": exc.detail}]


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


def pairing_in(form: Form) -> PairingIn:
    """The pairing form as ``PairingIn``: the lead is asked for only with several mentors."""
    mode = form.text("mode")
    mentors = form.ids("mentor_ids")
    starts_on = form.date("starts_on")
    if not mentors:
        raise InvalidInput.field("mentor_ids", "choose at least one mentor")
    return build(
        PairingIn,
        {
            "mode": mode,
            "mentor_ids": [str(m) for m in mentors],
            "goals": form.text("goals"),
            "starts_on": starts_on.isoformat() if starts_on else "",
            "lead_id": form.optional("lead_id") if mode == "many_to_one" else None,
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
        try:
            return await render_student(request, ctx, student_id)
        except NotFound:
            if not ctx.may_ever(Permission.EMERGENCY_ACCESS_REQUEST):
                raise
            # The same answer for a student out of reach, of another school or of none:
            # the way to emergency access depends on the reader's role alone.
            return error_page(
                request,
                404,
                link=(
                    f"/students/{student_id}/emergency-access",
                    N_("If a student's safety cannot wait, ask for emergency access"),
                ),
            )

    @get("/students/{student_id:uuid}/emergency-access")
    async def emergency_form(
        self, request: Request[Any, Any, Any], ctx: Ctx, student_id: FromPath[uuid.UUID]
    ) -> Response[str]:
        return await render_emergency(request, ctx, student_id)

    @post("/students/{student_id:uuid}/emergency-access", opt=FORM)
    async def ask_for_emergency_access(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        student_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        """The steps of ``POST /api/v1/students/{id}/emergency-access``, from a form."""
        form = await Form.read(request)
        reason = form.text("reason")
        try:
            data = build(EmergencyAccessIn, {"reason": reason})
            await emergency.request_access(ctx, student_id, data.reason)
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            return await render_emergency(
                request, ctx, student_id, status=exc.status, errors=errors_of(exc), reason=reason
            )
        # To the page again (a reload then asks for nothing twice): it shows until when
        # the access lasts and the way to the student's records.
        return redirect(f"/students/{student_id}/emergency-access")

    @post("/cases/{case_id:uuid}/pairings", opt=FORM)
    async def create_pairing(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        case_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            await care.create_pairing(ctx, case_id, pairing_in(form))
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            return await render_case(
                request, ctx, case_id, status=exc.status, errors=errors_of(exc)
            )
        return redirect(f"/cases/{case_id}?done=pairing")

    @post("/pairings/{pairing_id:uuid}/end", opt=FORM)
    async def end_pairing(
        self,
        request: Request[Any, Any, Any],
        ctx: Ctx,
        db_session: DbSession,
        pairing_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        form = await Form.read(request)
        try:
            data = build(
                PairingEndIn, {"ended_on": form.text("ended_on"), "reason": form.text("reason")}
            )
            ended = await care.end_pairing(ctx, pairing_id, data)
        except (InvalidInput, Conflict) as exc:
            await db_session.rollback()
            # The file the form was on: shown again with the error, if the reader reaches it.
            return await render_case(
                request, ctx, form.id("case_id"), status=exc.status, errors=errors_of(exc)
            )
        return redirect(f"/cases/{ended.case_id}?done=pairing_ended")

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
    # Whether the reader reaches the student's files (an emergency grant included),
    # decided without a trace: the page lists them, or offers the way to ask for them.
    file_reach = ctx.decide(
        Permission.CASE_READ,
        school_id=details.school_id,
        class_id=details.class_id,
        student_id=details.id,
    )
    files = await care.student_files(ctx, student_id) if file_reach.allowed else []
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
        under_emergency=file_reach.emergency,
        can_ask_emergency=not file_reach.allowed
        and ctx.may_ever(Permission.EMERGENCY_ACCESS_REQUEST),
    )


async def render_emergency(
    request: Request[Any, Any, Any],
    ctx: RequestContext,
    student_id: uuid.UUID,
    *,
    status: int = 200,
    errors: list[dict[str, str]] | None = None,
    reason: str = "",
) -> Response[str]:
    """The request form, or, while the reader reaches the student, the way to the files.

    Nothing of the student shows before the reader reaches them: the page is decided as
    the request is (``emergency.access_state``), so a student of another school and no
    student at all answer the same 404.
    """
    state = await emergency.access_state(ctx, student_id)
    reaches = state.live_until is not None or not state.needed
    files = await care.student_files(ctx, student_id) if reaches else []
    return page(
        request,
        "care/emergency.html",
        status=status,
        principal=ctx.principal,
        title=N_("Emergency access"),
        student_id=student_id,
        state=state,
        files=files,
        reaches=reaches,
        errors=errors or [],
        reason=reason,
        minutes=emergency.GRANT_MINUTES,
        min_chars=emergency.MIN_REASON_CHARS,
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
    # A mentor (a class teacher of another class too) reads the file, not the details.
    student = (
        await students.get_student(ctx, case.student_id)
        if await care.may_on_case(ctx, case_id, Permission.STUDENT_READ)
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
        "pairing": N_("The pairing was set up."),
        "pairing_ended": N_("The pairing was ended."),
    }.get(done or "")
    # The pairing form: for those who may set up this file's pairing (decided quietly),
    # with the colleagues who may mentor the student (a read of names, audited).
    can_pair = case.status == "open" and await care.may_on_case(
        ctx, case_id, Permission.PAIRING_CREATE
    )
    mentors = await care.mentor_candidates(ctx, case_id) if can_pair else []
    live_pairing = next((p for p in case.pairings or [] if not p.ended), None)
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
        can_pair=can_pair,
        mentors=mentors,
        mentor_names={m.id: m.display_name for m in mentors},
        live_pairing=live_pairing,
        pairing_modes=PAIRING_MODES,
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
