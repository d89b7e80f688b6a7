from __future__ import annotations

import uuid

from litestar import Controller, get
from litestar.params import FromQuery

from casemgr.dependencies import Ctx
from casemgr.reports import services
from casemgr.reports.services import CareSummary


class ReportController(Controller):
    path = "/api/v1/reports"
    tags = ("reports",)

    @get("/care-summary")
    async def care_summary(
        self, ctx: Ctx, school_id: FromQuery[uuid.UUID | None] = None
    ) -> CareSummary:
        return await services.care_summary(ctx, school_id)
