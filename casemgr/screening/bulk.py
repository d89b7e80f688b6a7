"""Sealed columns of plain rows, for the paths that handle thousands of rows at once.

The import, the review queue, progress counts and retention work with Core rows (tuples
and dicts), not ORM objects, which cost more to build than the sealing itself. These two
functions do for such rows what ``FieldCipher.seal_fields`` / ``open_field`` do for a
record: the same declared column specs, the same table/column/row binding, the same
padding, through the same ``FieldCipher``. They never see a key.
"""

from __future__ import annotations

import uuid
from typing import Any

from casemgr.crypto import FieldCipher
from casemgr.crypto.sealed import SealedSpec, spec_of

_SPECS: dict[tuple[type[Any], str], SealedSpec] = {}


def _spec(model: type[Any], column: str) -> SealedSpec:
    spec = _SPECS.get((model, column))
    if spec is None:
        spec = _SPECS[(model, column)] = spec_of(model, column)
    return spec


def seal_values(
    cipher: FieldCipher, model: type[Any], row_id: uuid.UUID, values: dict[str, Any]
) -> dict[str, bytes | None]:
    """The ciphertexts of ``values`` for row ``row_id`` of ``model``'s table."""
    table = model.__tablename__
    row = str(row_id)  # the associated data spells the id so; format it once per row
    sealed: dict[str, bytes | None] = {}
    for column, value in values.items():
        spec = _spec(model, column)
        if value is None and not spec.optional:
            raise ValueError(f"{table}.{column} needs a value")
        sealed[column] = cipher.seal_payload(
            table,
            column,
            row,
            None if value is None else spec.encode(value),
            min_bucket=spec.min_bucket,
        )
    return sealed


def open_value(
    cipher: FieldCipher, model: type[Any], column: str, row_id: uuid.UUID, blob: bytes | None
) -> Any:
    """The value sealed in ``blob`` (column ``column`` of row ``row_id``), or None."""
    if blob is None:
        return None
    payload = cipher.open_payload(model.__tablename__, column, row_id, blob)
    return None if payload is None else _spec(model, column).decode(payload)
