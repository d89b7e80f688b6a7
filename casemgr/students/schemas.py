from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Name = Annotated[str, Meta(min_length=1, max_length=100)]


class GuardianIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    relation: Annotated[str, Meta(min_length=1, max_length=30)]
    phone: Annotated[str, Meta(min_length=3, max_length=30, pattern=r"^[0-9+\- ()]+$")]


class StudentIn(msgspec.Struct, forbid_unknown_fields=True):
    class_id: uuid.UUID
    full_name: Name
    gender: Literal["female", "male"]
    birth_date: date
    student_no: Annotated[str, Meta(min_length=1, max_length=32)]
    national_id: str | None = None
    address: Annotated[str, Meta(max_length=300)] | None = None
    guardians: Annotated[list[GuardianIn], Meta(max_length=6)] | None = None


class StudentPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Fields to change; omitted ones stay. ``null`` clears an optional field."""

    class_id: uuid.UUID | msgspec.UnsetType = msgspec.UNSET
    full_name: Name | msgspec.UnsetType = msgspec.UNSET
    gender: Literal["female", "male"] | msgspec.UnsetType = msgspec.UNSET
    birth_date: date | msgspec.UnsetType = msgspec.UNSET
    student_no: Annotated[str, Meta(min_length=1, max_length=32)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    national_id: str | msgspec.UnsetType | None = msgspec.UNSET
    address: Annotated[str, Meta(max_length=300)] | msgspec.UnsetType | None = msgspec.UNSET
    guardians: Annotated[list[GuardianIn], Meta(max_length=6)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )


class LookupIn(msgspec.Struct, forbid_unknown_fields=True):
    student_no: Annotated[str, Meta(min_length=1, max_length=32)] | None = None
    national_id: Annotated[str, Meta(min_length=1, max_length=40)] | None = None


class CreatedStudent(msgspec.Struct):
    id: uuid.UUID
    code: str


class RosterEntry(msgspec.Struct):
    id: uuid.UUID
    code: str
    full_name: str
    student_no: str


class Guardian(msgspec.Struct):
    name: str
    relation: str
    phone: str


class StudentOut(msgspec.Struct):
    id: uuid.UUID
    code: str
    school_id: uuid.UUID
    class_id: uuid.UUID
    full_name: str
    gender: str
    birth_date: date
    student_no: str
    national_id: str | None
    address: str | None
    guardians: list[Guardian]


class Items(msgspec.Struct):
    items: list[RosterEntry]
