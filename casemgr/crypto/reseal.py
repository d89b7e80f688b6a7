"""Rewrite format-1 field ciphertexts as format 2 (padded), table by table.

Every model with sealed columns (``casemgr.crypto.sealed``) is visited in primary-key
order, a batch per transaction: a format-1 field is opened and sealed again as format 2,
and an optional field stored as NULL (format 1 left absent values NULL) gets a sealed
"no value", with a random blind index where its declaration asks for one. Each field names
its data key in its header, so no table needs to say whose key seals it. Rows whose key was
destroyed (erased students) are left as they are: nothing can open them.

Idempotent and resumable: a rerun finds nothing left to do, or continues where a crash
stopped. ``casemgr keys reseal`` runs it; ``casemgr keys rotate`` runs it after rewrapping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.crypto import Crypto
from casemgr.crypto.envelope import BLIND_INDEX_BYTES, FORMAT_V2, field_format, key_id_of
from casemgr.crypto.sealed import SealedSpec, sealed_columns
from casemgr.db import Base

Progress = Callable[[str, int], None]


def sealed_models() -> list[type[Any]]:
    """Every mapped class with at least one sealed column, in a stable order."""
    import casemgr.models  # noqa: F401  (registers every model)

    models = [m.class_ for m in Base.registry.mappers if sealed_columns(m.class_)]
    return sorted(models, key=lambda m: m.__tablename__)


def _needs_work(record: Any, specs: dict[str, SealedSpec]) -> bool:
    for column, spec in specs.items():
        blob = getattr(record, column)
        if blob is None:
            if spec.optional and spec.hide_absence:
                return True
        elif field_format(blob) != FORMAT_V2:
            return True
    return False


def _key_id(record: Any, specs: dict[str, SealedSpec]) -> uuid.UUID | None:
    for column in specs:
        blob = getattr(record, column)
        if blob is not None:
            return key_id_of(blob)
    return None


async def _reseal_batch(
    session: AsyncSession, crypto: Crypto, model: type[Any], after: Any, batch_size: int
) -> tuple[int, Any]:
    """Reseal one batch of ``model`` after primary key ``after``; (resealed, last key)."""
    specs = sealed_columns(model)
    query = select(model).order_by(model.id).limit(batch_size)
    if after is not None:
        query = query.where(model.id > after)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    records = list(await session.scalars(query))
    if not records:
        return 0, None
    todo = [r for r in records if _needs_work(r, specs)]
    key_ids = {k for r in todo if (k := _key_id(r, specs)) is not None}
    ciphers = await crypto.ciphers(session, list(key_ids))
    resealed = 0
    for record in todo:
        key_id = _key_id(record, specs)
        cipher = ciphers.get(key_id) if key_id is not None else None
        if cipher is None:
            continue  # destroyed key, or nothing sealed to learn the key from
        values: dict[str, Any] = {}
        for column, spec in specs.items():
            blob = getattr(record, column)
            if blob is None:
                if spec.optional and spec.hide_absence:
                    values[column] = None
                    if spec.absent_index and getattr(record, spec.absent_index) is None:
                        setattr(record, spec.absent_index, os.urandom(BLIND_INDEX_BYTES))
            elif field_format(blob) != FORMAT_V2:
                values[column] = cipher.open_field(record, column)
        cipher.seal_fields(record, **values)
        resealed += 1
    await session.flush()
    return resealed, records[-1].id


async def reseal(
    sessions: async_sessionmaker[AsyncSession],
    crypto: Crypto,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Reseal every table; returns the number of rows rewritten per table."""
    done: dict[str, int] = {}
    for model in sealed_models():
        table = model.__tablename__
        done[table] = 0
        after = None
        while True:
            async with sessions() as session, session.begin():
                count, after = await _reseal_batch(session, crypto, model, after, batch_size)
            if after is None:
                break
            done[table] += count
            if progress:
                progress(table, done[table])
    return done
