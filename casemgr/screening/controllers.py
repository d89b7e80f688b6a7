"""Screening routes (SPEC §6): thin edges over ``casemgr.screening.services``."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from casemgr.dependencies import Ctx
from casemgr.guards import CONTENT_TYPES
from casemgr.screening import imports, progress, services
from casemgr.screening.instruments import Catalogue
from casemgr.screening.schemas import (
    ConsentIn,
    CounselingNoteIn,
    CounselingNotes,
    Created,
    ImportOut,
    Instruments,
    Progress,
    Queue,
    ResultOut,
    Reviewed,
    ReviewIn,
    RoundIn,
    RoundOut,
    Rounds,
)
from casemgr.tabular import TABLE_TYPES, spool

# A survey tool's export of a whole school with every column it adds stays far below this.
RESULTS_MAX_BODY_BYTES = 64 * 1024 * 1024


def provide_catalogue(state: State) -> Catalogue:
    """The instruments loaded at start-up (``services.load_instruments``)."""
    catalogue: Catalogue = state.instruments
    return catalogue


CatalogueDep = NamedDependency[Catalogue]


class ScreeningController(Controller):
    path = "/api/v1"
    tags = ("screening",)
    # Litestar's way to scope a dependency to a controller (read, never mutated).
    dependencies = {"catalogue": Provide(provide_catalogue, sync_to_thread=False)}  # noqa: RUF012

    @get("/screening/instruments")
    async def instruments(self, ctx: Ctx, catalogue: CatalogueDep) -> Instruments:
        await services.require_instruments(ctx)
        return Instruments(items=services.list_instruments(catalogue))

    @post("/screening/rounds", status_code=HTTP_201_CREATED)
    async def create_round(
        self, data: JSONBody[RoundIn], ctx: Ctx, catalogue: CatalogueDep
    ) -> Created:
        screening_round = await services.create_round(ctx, data, catalogue)
        return Created(id=screening_round.id)

    @get("/screening/rounds")
    async def rounds(self, ctx: Ctx, school_id: FromQuery[uuid.UUID | None] = None) -> Rounds:
        return Rounds(items=await services.list_rounds(ctx, school_id))

    @get("/screening/rounds/{round_id:uuid}")
    async def read_round(self, round_id: FromPath[uuid.UUID], ctx: Ctx) -> RoundOut:
        return await services.get_round(ctx, round_id)

    @post("/screening/rounds/{round_id:uuid}/consents", status_code=HTTP_201_CREATED)
    async def record_consent(
        self, round_id: FromPath[uuid.UUID], data: JSONBody[ConsentIn], ctx: Ctx
    ) -> Created:
        consent = await services.record_consent(ctx, round_id, data)
        return Created(id=consent.id)

    @get("/screening/rounds/{round_id:uuid}/consents")
    async def consents(self, round_id: FromPath[uuid.UUID], ctx: Ctx) -> dict[str, Any]:
        return {"items": await services.list_consents(ctx, round_id)}

    @post(
        "/screening/rounds/{round_id:uuid}/results",
        status_code=HTTP_200_OK,
        opt={CONTENT_TYPES: TABLE_TYPES},
        request_max_body_size=RESULTS_MAX_BODY_BYTES,
    )
    async def import_results(
        self,
        round_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        ctx: Ctx,
        catalogue: CatalogueDep,
    ) -> ImportOut:
        decision = await imports.authorize_import(ctx, round_id)
        # End the request's first transaction before the body arrives: a slow upload must
        # not hold a database lock (SQLite takes the write lock at BEGIN).
        await ctx.session.commit()
        file = await spool(request.stream())
        try:
            outcome = await imports.import_results(
                ctx, round_id, file, request.content_type[0], catalogue, decision
            )
        finally:
            file.close()
        return ImportOut(imported=outcome.imported, rejected=[])

    @get("/screening/rounds/{round_id:uuid}/progress")
    async def progress(self, round_id: FromPath[uuid.UUID], ctx: Ctx) -> Progress:
        return await progress.round_progress(ctx, round_id)

    @get("/screening/review-queue")
    async def review_queue(self, ctx: Ctx, catalogue: CatalogueDep) -> Queue:
        return Queue(items=await services.review_queue(ctx, catalogue))

    @get("/screening/results/{result_id:uuid}")
    async def read_result(
        self, result_id: FromPath[uuid.UUID], ctx: Ctx, catalogue: CatalogueDep
    ) -> ResultOut:
        return await services.get_result(ctx, result_id, catalogue)

    @post("/screening/results/{result_id:uuid}/review", status_code=HTTP_200_OK)
    async def review(
        self, result_id: FromPath[uuid.UUID], data: JSONBody[ReviewIn], ctx: Ctx
    ) -> Reviewed:
        _, case_id = await services.review_result(ctx, result_id, data)
        return Reviewed(result_id=result_id, status=services.REVIEWED, case_id=case_id)

    @post("/students/{student_id:uuid}/counseling-notes", status_code=HTTP_201_CREATED)
    async def add_counseling_note(
        self, student_id: FromPath[uuid.UUID], data: JSONBody[CounselingNoteIn], ctx: Ctx
    ) -> Created:
        note = await services.add_counseling_note(ctx, student_id, data)
        return Created(id=note.id)

    @get("/students/{student_id:uuid}/counseling-notes")
    async def counseling_notes(
        self,
        student_id: FromPath[uuid.UUID],
        ctx: Ctx,
        school_year: FromQuery[str | None] = None,
    ) -> CounselingNotes:
        notes, year = await services.counseling_notes(ctx, student_id, school_year)
        return CounselingNotes(items=notes, school_year=year)


__all__ = ["ScreeningController"]
