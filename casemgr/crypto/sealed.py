"""Sealed columns, declared once on the model.

A feature says which columns hold personal data and what type their values have::

    class Student(Base):
        full_name: Mapped[bytes] = sealed(str)
        birth_date: Mapped[bytes] = sealed(date)
        guardians: Mapped[bytes] = sealed(list[Guardian], min_bucket=512)
        national_id: Mapped[bytes | None] = sealed(str, optional=True)

The attribute holds ciphertext (``bytes``), never the value. Only a ``FieldCipher`` turns
it into a value, and features get the cipher of a student's data key only after
authorization (``casemgr.context``)::

    cipher.seal_fields(student, full_name="王小明", birth_date=date(2013, 1, 1))
    cipher.open_field(student, "full_name")

The declaration carries what sealing needs: the value's codec, whether the field may be
empty, and the smallest padding bucket (``casemgr.crypto.envelope``). An optional field
seals its absence too (unless ``hide_absence=False``), so a NULL column cannot tell who
has, say, a national ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import msgspec
from sqlalchemy import LargeBinary
from sqlalchemy.orm import MappedColumn, mapped_column

SEALED_INFO_KEY = "sealed"


@dataclass(frozen=True)
class SealedSpec:
    """How one sealed column encodes its values."""

    type: Any
    optional: bool = False
    min_bucket: int = 32
    hide_absence: bool = True
    # A blind-index column that must look random (not NULL) while the field is absent.
    absent_index: str | None = None

    def encode(self, value: Any) -> bytes:
        if self.type is str:
            if not isinstance(value, str):
                raise TypeError("a text field takes str")
            return value.encode("utf-8")
        if self.type is date and not isinstance(value, datetime):
            return value.isoformat().encode()
        if self.type is bool:
            return b"1" if value else b"0"
        if self.type is int:
            return str(int(value)).encode()
        return msgspec.json.encode(msgspec.convert(value, self.type, from_attributes=True))

    def decode(self, payload: bytes) -> Any:
        if self.type is str:
            return payload.decode("utf-8")
        if self.type is date:
            return date.fromisoformat(payload.decode())
        if self.type is bool:
            return payload == b"1"
        if self.type is int:
            return int(payload)
        return msgspec.json.decode(payload, type=self.type)


def sealed(
    type_: Any,
    *,
    optional: bool = False,
    min_bucket: int = 32,
    hide_absence: bool = True,
    absent_index: str | None = None,
) -> MappedColumn[Any]:
    """A ciphertext column whose values are of ``type_`` (see the module docstring)."""
    spec = SealedSpec(type_, optional, min_bucket, hide_absence, absent_index)
    return mapped_column(LargeBinary, nullable=optional, info={SEALED_INFO_KEY: spec})


def spec_of(model: type[Any], column: str) -> SealedSpec:
    try:
        spec = model.__table__.c[column].info[SEALED_INFO_KEY]
    except KeyError:
        raise ValueError(f"{model.__tablename__}.{column} is not a sealed column") from None
    assert isinstance(spec, SealedSpec)
    return spec


def sealed_columns(model: type[Any]) -> dict[str, SealedSpec]:
    """Every sealed column of a model, in declaration order."""
    return {
        column.name: column.info[SEALED_INFO_KEY]
        for column in model.__table__.columns
        if SEALED_INFO_KEY in column.info
    }
