"""HTTP routes of the care programme (SPEC §6). Each parses, calls one service, shapes
the answer; authorization, sealing and auditing happen in the services."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from litestar import Controller, Response, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from casemgr.care import emergency, records, services, tasks, visits
from casemgr.care.schemas import (
    CaseClosed,
    CaseCloseIn,
    CaseIn,
    CaseList,
    CaseOut,
    CasePatch,
    CategoryEndIn,
    CategoryIn,
    CategoryOut,
    Created,
    CreatedCase,
    CreatedCategory,
    EmergencyAccessIn,
    EmergencyGrantCreated,
    EmergencyGrantList,
    EmergencyGrantOut,
    EmergencyReviewIn,
    EraseIn,
    GuidanceIn,
    HomeVisitIn,
    HomeVisitList,
    PairingEndIn,
    PairingIn,
    PairingList,
    PairingOut,
    SupportLogIn,
    SupportLogList,
    TaskList,
    TimelineList,
    VisitProgress,
    VisitRequirementIn,
    VisitRequirementOut,
)
from casemgr.dependencies import Ctx

# ``?include_earlier=true``: entries before the current school year (SPEC P3), audited.
Earlier = FromQuery[bool]


class CaseController(Controller):
    """Care categories, case files, pairings, support logs and guidance."""

    path = "/api/v1"
    tags = ("care",)

    @post("/students/{student_id:uuid}/care-categories", status_code=HTTP_201_CREATED)
    async def add_category(
        self, student_id: FromPath[uuid.UUID], data: JSONBody[CategoryIn], ctx: Ctx
    ) -> CreatedCategory:
        record, case = await services.add_category(ctx, student_id, data)
        return CreatedCategory(id=record.id, case_id=case.id)

    @post("/care-categories/{category_id:uuid}/end", status_code=HTTP_200_OK)
    async def end_category(
        self, category_id: FromPath[uuid.UUID], data: JSONBody[CategoryEndIn], ctx: Ctx
    ) -> CategoryOut:
        return await services.end_category(ctx, category_id, data)

    @post("/cases", status_code=HTTP_201_CREATED)
    async def open_case(self, data: JSONBody[CaseIn], ctx: Ctx) -> CreatedCase:
        case = await services.open_case(ctx, data.student_id, data.reason)
        return CreatedCase(id=case.id, code=case.code)

    @get("/cases")
    async def list_cases(
        self,
        ctx: Ctx,
        include_earlier: Earlier = False,
        status: FromQuery[Literal["open", "closed"] | None] = None,
        student_id: FromQuery[uuid.UUID | None] = None,
    ) -> CaseList:
        items = await services.list_cases(
            ctx, include_earlier=include_earlier, status=status, student_id=student_id
        )
        return CaseList(items=items)

    @get("/cases/{case_id:uuid}")
    async def read_case(
        self, case_id: FromPath[uuid.UUID], ctx: Ctx, include_earlier: Earlier = False
    ) -> CaseOut:
        return await services.get_case(ctx, case_id, include_earlier=include_earlier)

    @patch("/cases/{case_id:uuid}")
    async def update_case(
        self, case_id: FromPath[uuid.UUID], data: JSONBody[CasePatch], ctx: Ctx
    ) -> CaseOut:
        return await services.update_case(ctx, case_id, data)

    @post("/cases/{case_id:uuid}/close", status_code=HTTP_200_OK)
    async def close_case(
        self, case_id: FromPath[uuid.UUID], data: JSONBody[CaseCloseIn], ctx: Ctx
    ) -> CaseClosed:
        return await services.close_case(ctx, case_id, data.reason)

    @get("/cases/{case_id:uuid}/timeline")
    async def timeline(
        self, case_id: FromPath[uuid.UUID], ctx: Ctx, include_earlier: Earlier = False
    ) -> TimelineList:
        items = await services.timeline(ctx, case_id, include_earlier=include_earlier)
        return TimelineList(items=items)

    @post("/cases/{case_id:uuid}/pairings", status_code=HTTP_201_CREATED)
    async def create_pairing(
        self, case_id: FromPath[uuid.UUID], data: JSONBody[PairingIn], ctx: Ctx
    ) -> Created:
        return Created(id=(await services.create_pairing(ctx, case_id, data)).id)

    @get("/cases/{case_id:uuid}/pairings")
    async def case_pairings(self, case_id: FromPath[uuid.UUID], ctx: Ctx) -> PairingList:
        return PairingList(items=await services.case_pairings(ctx, case_id))

    @post("/pairings/{pairing_id:uuid}/end", status_code=HTTP_200_OK)
    async def end_pairing(
        self, pairing_id: FromPath[uuid.UUID], data: JSONBody[PairingEndIn], ctx: Ctx
    ) -> PairingOut:
        return await services.end_pairing(ctx, pairing_id, data)

    @get("/schools/{school_id:uuid}/pairings")
    async def school_pairings(
        self, school_id: FromPath[uuid.UUID], ctx: Ctx, include_earlier: Earlier = False
    ) -> PairingList:
        items = await services.school_pairings(ctx, school_id, include_earlier=include_earlier)
        return PairingList(items=items)

    @post("/cases/{case_id:uuid}/support-logs", status_code=HTTP_201_CREATED)
    async def add_support_log(
        self, case_id: FromPath[uuid.UUID], data: JSONBody[SupportLogIn], ctx: Ctx
    ) -> Created:
        return Created(id=(await services.add_support_log(ctx, case_id, data)).id)

    @get("/cases/{case_id:uuid}/support-logs")
    async def list_support_logs(
        self, case_id: FromPath[uuid.UUID], ctx: Ctx, include_earlier: Earlier = False
    ) -> SupportLogList:
        items = await services.list_support_logs(ctx, case_id, include_earlier=include_earlier)
        return SupportLogList(items=items)

    @post("/cases/{case_id:uuid}/guidance", status_code=HTTP_201_CREATED)
    async def write_guidance(
        self, case_id: FromPath[uuid.UUID], data: JSONBody[GuidanceIn], ctx: Ctx
    ) -> Created:
        return Created(id=(await services.write_guidance(ctx, case_id, data.text)).id)


class VisitController(Controller):
    """Home visits, yearly requirements and progress."""

    path = "/api/v1"
    tags = ("home visits",)

    @post("/students/{student_id:uuid}/home-visits", status_code=HTTP_201_CREATED)
    async def add_visit(
        self, student_id: FromPath[uuid.UUID], data: JSONBody[HomeVisitIn], ctx: Ctx
    ) -> Created:
        return Created(id=(await visits.add_home_visit(ctx, student_id, data)).id)

    @get("/students/{student_id:uuid}/home-visits")
    async def list_visits(
        self, student_id: FromPath[uuid.UUID], ctx: Ctx, include_earlier: Earlier = False
    ) -> HomeVisitList:
        items = await visits.list_home_visits(ctx, student_id, include_earlier=include_earlier)
        return HomeVisitList(items=items)

    @put("/schools/{school_id:uuid}/visit-requirements", status_code=HTTP_200_OK)
    async def set_requirement(
        self, school_id: FromPath[uuid.UUID], data: JSONBody[VisitRequirementIn], ctx: Ctx
    ) -> VisitRequirementOut:
        return await visits.set_visit_requirement(ctx, school_id, data)

    @get("/schools/{school_id:uuid}/visit-requirements")
    async def get_requirement(
        self,
        school_id: FromPath[uuid.UUID],
        ctx: Ctx,
        school_year: FromQuery[str | None] = None,
    ) -> VisitRequirementOut:
        return await visits.get_visit_requirement(ctx, school_id, school_year)

    @get("/me/visit-progress")
    async def my_progress(self, ctx: Ctx) -> VisitProgress:
        return await visits.my_visit_progress(ctx)

    @get("/schools/{school_id:uuid}/visit-progress")
    async def school_progress(self, school_id: FromPath[uuid.UUID], ctx: Ctx) -> VisitProgress:
        return await visits.school_visit_progress(ctx, school_id)


class TaskController(Controller):
    path = "/api/v1/me/tasks"
    tags = ("tasks",)

    @get("")
    async def my_tasks(self, ctx: Ctx) -> TaskList:
        return TaskList(items=await tasks.my_tasks(ctx))

    @post("/{task_id:uuid}/done", status_code=HTTP_204_NO_CONTENT)
    async def done(self, task_id: FromPath[uuid.UUID], ctx: Ctx) -> None:
        await tasks.complete_task(ctx, task_id)


class EmergencyController(Controller):
    """Emergency access: asked for by staff, reviewed by auditors (SPEC P6)."""

    path = "/api/v1"
    tags = ("emergency access",)

    @post("/students/{student_id:uuid}/emergency-access", status_code=HTTP_201_CREATED)
    async def request_access(
        self, student_id: FromPath[uuid.UUID], data: JSONBody[EmergencyAccessIn], ctx: Ctx
    ) -> EmergencyGrantCreated:
        grant = await emergency.request_access(ctx, student_id, data.reason)
        return EmergencyGrantCreated(id=grant.id, expires_at=grant.expires_at)

    @get("/audit/emergency-access")
    async def list_grants(
        self, ctx: Ctx, reviewed: FromQuery[bool | None] = None
    ) -> EmergencyGrantList:
        return EmergencyGrantList(items=await emergency.list_grants(ctx, reviewed=reviewed))

    @post("/audit/emergency-access/{grant_id:uuid}/review", status_code=HTTP_200_OK)
    async def review(
        self, grant_id: FromPath[uuid.UUID], data: JSONBody[EmergencyReviewIn], ctx: Ctx
    ) -> EmergencyGrantOut:
        return await emergency.review_grant(ctx, grant_id, data.note)


class StudentRecordController(Controller):
    """A student's whole record: export for a guardian, erasure (SPEC P5)."""

    path = "/api/v1/students/{student_id:uuid}"
    tags = ("students",)

    @get("/export")
    async def export(self, student_id: FromPath[uuid.UUID], ctx: Ctx) -> Response[dict[str, Any]]:
        code, document = await records.export_student(ctx, student_id)
        return Response(
            document,
            headers={"Content-Disposition": f'attachment; filename="student-{code}.json"'},
        )

    @post("/erase", status_code=HTTP_204_NO_CONTENT)
    async def erase(
        self, student_id: FromPath[uuid.UUID], data: JSONBody[EraseIn], ctx: Ctx
    ) -> None:
        await records.erase_student(ctx, student_id, data.reason)


CONTROLLERS = [
    CaseController,
    VisitController,
    TaskController,
    EmergencyController,
    StudentRecordController,
]
