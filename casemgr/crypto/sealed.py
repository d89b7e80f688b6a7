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


@dataclass(frozen=True)
class BlindIndexSpec:
    """A keyed lookup index computed from a sealed column (``casemgr.crypto.blind_index``).

    ``scope`` names a clear column whose value separates the index's domain (a student
    number is unique per school); ``version`` names the column recording which
    blind-index key version made the row's indexes, so ``keys rotate --blind-index`` can
    move rows to a new key and resume after a crash.
    """

    source: str
    kind: str
    scope: str | None = None
    version: str = "bidx_version"


BLIND_INDEX_INFO_KEY = "blind_index"


def blind_index_column(
    source: str, *, kind: str | None = None, scope: str | None = None, optional: bool = False
) -> MappedColumn[Any]:
    """An 8-byte blind index of sealed column ``source``.

    For an optional source, new rows still never store NULL: an absent value gets random
    bytes (see ``SealedSpec.absent_index``); the column is nullable for older rows only.
    """
    spec = BlindIndexSpec(source=source, kind=kind or source, scope=scope)
    return mapped_column(
        LargeBinary(8), index=True, nullable=optional, info={BLIND_INDEX_INFO_KEY: spec}
    )


def blind_index_columns(model: type[Any]) -> dict[str, BlindIndexSpec]:
    return {
        column.name: column.info[BLIND_INDEX_INFO_KEY]
        for column in model.__table__.columns
        if BLIND_INDEX_INFO_KEY in column.info
    }


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
