from __future__ import annotations

import uuid

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from casemgr.dependencies import Ctx
from casemgr.students import services
from casemgr.students.schemas import (
    CreatedStudent,
    Items,
    LookupIn,
    StudentIn,
    StudentOut,
    StudentPatch,
)


class StudentController(Controller):
    path = "/api/v1"
    tags = ("students",)

    @post("/students", status_code=HTTP_201_CREATED)
    async def create(self, data: JSONBody[StudentIn], ctx: Ctx) -> CreatedStudent:
        student = await services.create_student(ctx, data)
        return CreatedStudent(id=student.id, code=student.code)

    @get("/classes/{class_id:uuid}/students")
    async def roster(self, class_id: FromPath[uuid.UUID], ctx: Ctx) -> Items:
        return Items(items=await services.roster(ctx, class_id))

    @get("/students/{student_id:uuid}")
    async def read(self, student_id: FromPath[uuid.UUID], ctx: Ctx) -> StudentOut:
        return await services.get_student(ctx, student_id)

    @patch("/students/{student_id:uuid}")
    async def update(
        self, student_id: FromPath[uuid.UUID], data: JSONBody[StudentPatch], ctx: Ctx
    ) -> StudentOut:
        return await services.update_student(ctx, student_id, data)

    @post("/students/lookup", status_code=HTTP_200_OK)
    async def lookup(self, data: JSONBody[LookupIn], ctx: Ctx) -> Items:
        found = await services.lookup(ctx, student_no=data.student_no, national_id=data.national_id)
        return Items(items=found)
