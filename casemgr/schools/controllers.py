"""School administration over HTTP: schools, classes, class teachers, the school-year
rollover, the roster import and transfers between schools (SPEC §6)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
)
from msgspec import Meta

from casemgr.accounts import admin
from casemgr.authz import Permission
from casemgr.dependencies import Ctx
from casemgr.guards import CONTENT_TYPES
from casemgr.schools import rollover, services
from casemgr.schools.models import School
from casemgr.schools.services import ClassOut, SchoolOut
from casemgr.students import imports, transfers
from casemgr.tabular import spool


class SchoolIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    code: Annotated[str, Meta(min_length=1, max_length=32)]
    stage: Literal["primary", "junior", "senior", "nine_year", "complete"] | None = None


class ClassIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    grade: int
    school_year: Annotated[str, Meta(max_length=9)]


class Created(msgspec.Struct):
    id: uuid.UUID


class SchoolItems(msgspec.Struct):
    items: list[SchoolOut]


class ClassItems(msgspec.Struct):
    items: list[ClassOut]


class TeacherIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: uuid.UUID


class RolloverIn(msgspec.Struct, forbid_unknown_fields=True):
    to_school_year: Annotated[str, Meta(max_length=9)]
    dry_run: bool = False


class ImportOut(msgspec.Struct):
    created: int
    rejected: list[dict[str, object]]


class TransferIn(msgspec.Struct, forbid_unknown_fields=True):
    national_id: Annotated[str, Meta(min_length=1, max_length=40)]
    to_class_id: uuid.UUID


class TransferItemOut(msgspec.Struct):
    id: uuid.UUID
    direction: str
    status: str
    requested_at: datetime
    expires_at: datetime
    to_school_id: uuid.UUID
    to_school_name: str
    to_class_id: uuid.UUID
    student: dict[str, object] | None


class TransferItems(msgspec.Struct):
    items: list[TransferItemOut]


class ApprovedOut(msgspec.Struct):
    student_id: uuid.UUID
    to_class_id: uuid.UUID
    student_no_changed: bool
    pairings_ended: int


IMPORT_OPT = {CONTENT_TYPES: imports.MEDIA_TYPES, "max_body_bytes": imports.MAX_BODY_BYTES}


class SchoolController(Controller):
    path = "/api/v1"
    tags = ("schools",)

    @get("/schools")
    async def schools(self, ctx: Ctx) -> SchoolItems:
        return SchoolItems(items=await services.schools_within_reach(ctx))

    @post("/schools", status_code=HTTP_201_CREATED)
    async def create_school(self, data: JSONBody[SchoolIn], ctx: Ctx) -> Created:
        school = await services.create_school(ctx, name=data.name, code=data.code, stage=data.stage)
        return Created(id=school.id)

    @get("/schools/{school_id:uuid}/classes")
    async def classes(
        self,
        school_id: FromPath[uuid.UUID],
        ctx: Ctx,
        school_year: FromQuery[str | None] = None,
    ) -> ClassItems:
        return ClassItems(items=await services.classes_within_reach(ctx, school_id, school_year))

    @post("/schools/{school_id:uuid}/classes", status_code=HTTP_201_CREATED)
    async def create_class(
        self, school_id: FromPath[uuid.UUID], data: JSONBody[ClassIn], ctx: Ctx
    ) -> Created:
        created = await services.create_class(
            ctx, school_id, name=data.name, grade=data.grade, school_year=data.school_year
        )
        return Created(id=created.id)

    @post("/classes/{class_id:uuid}/teachers", status_code=HTTP_204_NO_CONTENT)
    async def assign_teacher(
        self, class_id: FromPath[uuid.UUID], data: JSONBody[TeacherIn], ctx: Ctx
    ) -> None:
        await admin.assign_class_teacher(ctx, class_id, data.user_id)

    @delete("/classes/{class_id:uuid}/teachers/{user_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def unassign_teacher(
        self, class_id: FromPath[uuid.UUID], user_id: FromPath[uuid.UUID], ctx: Ctx
    ) -> None:
        await admin.unassign_class_teacher(ctx, class_id, user_id)

    @post("/schools/{school_id:uuid}/rollover", status_code=HTTP_200_OK)
    async def rollover(
        self, school_id: FromPath[uuid.UUID], data: JSONBody[RolloverIn], ctx: Ctx
    ) -> rollover.RolloverPlan:
        school = await ctx.session.get(School, school_id)
        decision = await ctx.require(
            Permission.SCHOOL_YEAR_ROLLOVER,
            resource_type="school",
            resource_id=school_id,
            school_id=school_id,
            exists=school is not None,
        )
        return await rollover.rollover(
            ctx.session,
            ctx.crypto,
            school_id,
            data.to_school_year,
            dry_run=data.dry_run,
            actor=ctx.actor(decision, school_id),
        )

    @post(
        "/schools/{school_id:uuid}/students/import",
        status_code=HTTP_200_OK,
        opt=IMPORT_OPT,
        request_max_body_size=imports.MAX_BODY_BYTES,
    )
    async def import_roster(
        self, request: Request[Any, Any, Any], school_id: FromPath[uuid.UUID], ctx: Ctx
    ) -> ImportOut:
        school = await ctx.session.get(School, school_id)
        decision = await ctx.require(
            Permission.STUDENT_IMPORT,
            resource_type="school",
            resource_id=school_id,
            school_id=school_id,
            exists=school is not None,
        )
        actor = ctx.actor(decision, school_id)
        media_type, _ = request.content_type
        # End the request's first transaction before the body arrives: a slow upload must
        # hold no database lock (SQLite takes the write lock at BEGIN; every other request
        # of the service, reads included, waited for the whole upload) nor a pooled
        # connection. The import runs in a transaction of its own.
        await ctx.session.commit()
        upload = await spool(request.stream())
        try:
            result = await imports.import_roster(
                ctx.session,
                ctx.crypto,
                school_id,
                await asyncio.to_thread(imports.open_roster, upload, media_type),
                actor=actor,
            )
        except imports.RosterRejected as refused:
            # Nothing of the file stays; the refusal itself does, in its own transaction.
            await imports.record_refusal(ctx.session, refused, actor=actor, school_id=school_id)
            raise
        finally:
            upload.close()
        return ImportOut(created=result.created, rejected=[])


class TransferController(Controller):
    path = "/api/v1/students/transfers"
    tags = ("transfers",)

    @post("", status_code=HTTP_202_ACCEPTED)
    async def request(self, data: JSONBody[TransferIn], ctx: Ctx) -> Created:
        transfer_id = await transfers.request_transfer(
            ctx, national_id=data.national_id, to_class_id=data.to_class_id
        )
        return Created(id=transfer_id)

    @get("")
    async def list(self, ctx: Ctx) -> TransferItems:
        found = await transfers.list_transfers(ctx)
        return TransferItems(items=[TransferItemOut(**asdict(t)) for t in found])

    @post("/{transfer_id:uuid}/approve", status_code=HTTP_200_OK)
    async def approve(self, transfer_id: FromPath[uuid.UUID], ctx: Ctx) -> ApprovedOut:
        return ApprovedOut(**asdict(await transfers.approve_transfer(ctx, transfer_id)))

    @post("/{transfer_id:uuid}/decline", status_code=HTTP_204_NO_CONTENT)
    async def decline(self, transfer_id: FromPath[uuid.UUID], ctx: Ctx) -> None:
        await transfers.decline_transfer(ctx, transfer_id)
