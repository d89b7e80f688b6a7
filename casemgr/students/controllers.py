from __future__ import annotations

import uuid

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from casemgr.dependencies import AuthorizerDep, CryptoDep, CurrentPrincipal, DbSession
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
    async def create(
        self,
        data: JSONBody[StudentIn],
        db_session: DbSession,
        crypto: CryptoDep,
        authorizer: AuthorizerDep,
        principal: CurrentPrincipal,
    ) -> CreatedStudent:
        student = await services.create_student(db_session, crypto, authorizer, principal, data)
        return CreatedStudent(id=student.id, code=student.code)

    @get("/classes/{class_id:uuid}/students")
    async def roster(
        self,
        class_id: FromPath[uuid.UUID],
        db_session: DbSession,
        crypto: CryptoDep,
        authorizer: AuthorizerDep,
        principal: CurrentPrincipal,
    ) -> Items:
        return Items(
            items=await services.roster(db_session, crypto, authorizer, principal, class_id)
        )

    @get("/students/{student_id:uuid}")
    async def read(
        self,
        student_id: FromPath[uuid.UUID],
        db_session: DbSession,
        crypto: CryptoDep,
        authorizer: AuthorizerDep,
        principal: CurrentPrincipal,
    ) -> StudentOut:
        return await services.get_student(db_session, crypto, authorizer, principal, student_id)

    @patch("/students/{student_id:uuid}")
    async def update(
        self,
        student_id: FromPath[uuid.UUID],
        data: JSONBody[StudentPatch],
        db_session: DbSession,
        crypto: CryptoDep,
        authorizer: AuthorizerDep,
        principal: CurrentPrincipal,
    ) -> StudentOut:
        return await services.update_student(
            db_session, crypto, authorizer, principal, student_id, data
        )

    @post("/students/lookup", status_code=HTTP_200_OK)
    async def lookup(
        self,
        data: JSONBody[LookupIn],
        db_session: DbSession,
        crypto: CryptoDep,
        authorizer: AuthorizerDep,
        principal: CurrentPrincipal,
    ) -> Items:
        found = await services.lookup(
            db_session,
            crypto,
            authorizer,
            principal,
            student_no=data.student_no,
            national_id=data.national_id,
        )
        return Items(items=found)
