"""Key-encryption-key rotation: rewrap every data key under a new KEK version.

Online (readers keep working: both versions stay in the ring while rows move), batched
(one short transaction per batch) and resumable (an unfinished ``key_rotations`` row is
picked up by the next run, which continues where the last committed batch stopped).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.crypto.envelope import BLIND_INDEX_BYTES, blind_index, unwrap_with, wrap_with
from casemgr.crypto.keyring import KeyRing, KeyRingError, blind_index_name
from casemgr.crypto.models import DataKey, KeyRotation
from casemgr.crypto.sealed import BlindIndexSpec, blind_index_columns
from casemgr.db import Base, utcnow

if TYPE_CHECKING:
    from casemgr.crypto import Crypto

KEK_KIND = "kek"
BLIND_INDEX_KIND = "blind_index"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RotationResult:
    target_version: int
    rewrapped: int
    resumed: bool


@dataclass(frozen=True)
class KeyStatus:
    current_version: int
    versions_on_disk: list[int]
    keys_by_version: dict[int, int]
    destroyed_keys: int
    rotation_in_progress: int | None

    @property
    def versions_not_needed(self) -> list[int]:
        return [
            v
            for v in self.versions_on_disk
            if v not in self.keys_by_version and v != self.current_version
        ]


async def key_status(session: AsyncSession, keyring: KeyRing) -> KeyStatus:
    counts = await session.execute(
        select(DataKey.kek_version, func.count())
        .where(DataKey.wrapped.is_not(None))
        .group_by(DataKey.kek_version)
    )
    destroyed = await session.scalar(select(func.count()).where(DataKey.wrapped.is_(None)))
    pending = await session.scalar(
        select(KeyRotation.target_version).where(
            KeyRotation.kind == KEK_KIND, KeyRotation.finished_at.is_(None)
        )
    )
    return KeyStatus(
        current_version=keyring.current_kek_version,
        versions_on_disk=keyring.kek_versions,
        keys_by_version={int(v): int(n) for v, n in counts if v is not None},
        destroyed_keys=int(destroyed or 0),
        rotation_in_progress=pending,
    )


async def rotate(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    *,
    batch_size: int = 2000,
    progress: Progress | None = None,
) -> RotationResult:
    """Rotate to a new KEK version, or finish the rotation a crash interrupted."""
    async with sessions() as session, session.begin():
        pending = await session.scalar(
            select(KeyRotation)
            .where(KeyRotation.kind == KEK_KIND, KeyRotation.finished_at.is_(None))
            .order_by(KeyRotation.id)
        )
        resumed = pending is not None
        if pending is None:
            on_disk = keyring.kek_versions
            recorded = await session.scalar(
                select(func.max(KeyRotation.target_version)).where(KeyRotation.kind == KEK_KIND)
            )
            target = max([*on_disk, recorded or 0]) + 1
            session.add(KeyRotation(kind=KEK_KIND, target_version=target, rewrapped=0))
        else:
            target = pending.target_version
    # The rotation is recorded before its key exists, so a crash in between is resumed.
    if target not in keyring.kek_versions:
        async with sessions() as session:
            already = await session.scalar(
                select(func.count()).where(DataKey.kek_version == target)
            )
        if already:
            raise KeyRingError(
                f"key-encryption key version {target} is missing but {already} keys use it"
            )
        keyring.add_kek_version(target)
    aeads: dict[int, AESGCM] = {}

    def aead_of(version: int) -> AESGCM:
        if version not in aeads:
            aeads[version] = AESGCM(keyring.kek(version))
        return aeads[version]

    new_aead = aead_of(target)

    async with sessions() as session:
        remaining = await session.scalar(
            select(func.count()).where(DataKey.wrapped.is_not(None), DataKey.kek_version != target)
        )
        done_before = await session.scalar(
            select(KeyRotation.rewrapped).where(
                KeyRotation.kind == KEK_KIND, KeyRotation.target_version == target
            )
        )
    total = int(remaining or 0)
    done = 0
    if progress:
        progress(0, total)

    table = cast(Table, DataKey.__table__)
    # A Core executemany: one round trip per batch on both backends.
    stmt = (
        update(table)
        .where(table.c.id == bindparam("key_id"), table.c.kek_version == bindparam("old_version"))
        .values(kek_version=target, wrapped=bindparam("new_wrapped"))
    )
    # Pages walk the key table by id (keyset), so each batch query starts where the last
    # one stopped instead of skipping every key already moved: linear, not quadratic. A
    # final pass from the start picks up keys skipped because another session held them.
    after: Any = None
    final_pass = False
    while True:
        async with sessions() as session, session.begin():
            query = (
                select(DataKey.id, DataKey.kek_version, DataKey.wrapped)
                .where(DataKey.wrapped.is_not(None), DataKey.kek_version != target)
                .order_by(DataKey.id)
                .limit(batch_size)
            )
            if after is not None:
                query = query.where(DataKey.id > after)
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                # Concurrent rotators (or a leftover one) split the work instead of blocking.
                rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
                if not rows and not final_pass:
                    final_pass, after = True, None
                    continue
                if not rows:
                    # Only locked keys are left (another rotator, an erasure, the session of a
                    # killed client): wait for them rather than finish without them.
                    rows = (await session.execute(query.with_for_update())).all()
                if not rows:
                    # Before declaring the rotation done, wait out every transaction that
                    # is still inserting data keys: one that began before the new KEK
                    # existed may have wrapped under the old one. This lock mode waits for
                    # open writers (and other rotators) and ends with this transaction, after
                    # which new keys can only be wrapped under the new version.
                    await session.execute(text("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE"))
                    rows = (await session.execute(query)).all()
            else:
                rows = (await session.execute(query)).all()
            if not rows:
                break
            after = rows[-1][0]
            params = []
            for key_id, old_version, wrapped in rows:
                # The query selects wrapped (not destroyed) keys only: both are set.
                assert old_version is not None and wrapped is not None
                raw = unwrap_with(aead_of(old_version), key_id, wrapped)
                params.append(
                    {
                        "key_id": key_id,
                        "old_version": old_version,
                        "new_wrapped": wrap_with(new_aead, target, key_id, raw),
                    }
                )
            await session.execute(stmt, params)
            await session.execute(
                update(KeyRotation)
                .where(KeyRotation.kind == KEK_KIND, KeyRotation.target_version == target)
                .values(rewrapped=KeyRotation.rewrapped + len(rows))
            )
        done += len(rows)
        if progress:
            progress(done, total)

    async with sessions() as session, session.begin():
        await session.execute(
            update(KeyRotation)
            .where(KeyRotation.kind == KEK_KIND, KeyRotation.target_version == target)
            .values(finished_at=utcnow())
        )
    return RotationResult(
        target_version=target, rewrapped=done + int(done_before or 0), resumed=resumed
    )


# -- blind-index key rotation ---------------------------------------------------------


def blind_indexed_models() -> list[type[Any]]:
    """Every mapped class with blind-index columns, in a stable order."""
    import casemgr.models  # noqa: F401  (registers every model)

    models = [m.class_ for m in Base.registry.mappers if blind_index_columns(m.class_)]
    return sorted(models, key=lambda m: m.__tablename__)


async def _start_blind_index_rotation(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing
) -> tuple[int, bool]:
    async with sessions() as session, session.begin():
        pending = await session.scalar(
            select(KeyRotation.target_version).where(
                KeyRotation.kind == BLIND_INDEX_KIND, KeyRotation.finished_at.is_(None)
            )
        )
        if pending is not None:
            return int(pending), True
        recorded = await session.scalar(
            select(func.max(KeyRotation.target_version)).where(KeyRotation.kind == BLIND_INDEX_KIND)
        )
        target = max(keyring.blind_index_version, recorded or 1) + 1
        session.add(KeyRotation(kind=BLIND_INDEX_KIND, target_version=target, rewrapped=0))
    return target, False


def _reindex(record: Any, cipher: Any, key: bytes, specs: dict[str, BlindIndexSpec]) -> None:
    for column, spec in specs.items():
        value = cipher.open_field(record, spec.source) if cipher is not None else None
        if value is None:
            # Absent, or the record's key was destroyed: an index that matches nothing.
            setattr(record, column, os.urandom(BLIND_INDEX_BYTES))
            continue
        scope = str(getattr(record, spec.scope)) if spec.scope else ""
        setattr(record, column, blind_index(key, spec.kind, value, scope))


async def rotate_blind_index(
    sessions: async_sessionmaker[AsyncSession],
    crypto: Crypto,
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> RotationResult:
    """Add a blind-index key version and recompute every index with it (resumable).

    While rows move, lookups match the index under any key in the ring
    (``Crypto.blind_indexes``), so they keep working; new rows use the new key at once.
    """
    keyring = crypto.keyring
    target, resumed = await _start_blind_index_rotation(sessions, keyring)
    keyring.add_blind_index_version(target)
    key = keyring.blind_index_keys[target]
    models = blind_indexed_models()
    async with sessions() as session:
        total = 0
        for model in models:
            version_column = next(iter(blind_index_columns(model).values())).version
            total += int(
                await session.scalar(
                    select(func.count())
                    .select_from(model)
                    .where(getattr(model, version_column) != target)
                )
                or 0
            )
    done = 0
    if progress:
        progress(0, total)
    for model in models:
        specs = blind_index_columns(model)
        version = getattr(model, next(iter(specs.values())).version)
        after = None
        while True:
            async with sessions() as session, session.begin():
                query = select(model).where(version != target).order_by(model.id).limit(batch_size)
                if after is not None:
                    query = query.where(model.id > after)
                if session.bind is not None and session.bind.dialect.name == "postgresql":
                    query = query.with_for_update()
                records = list(await session.scalars(query))
                if not records:
                    break
                ciphers = await crypto.ciphers(session, [r.data_key_id for r in records])
                for record in records:
                    _reindex(record, ciphers.get(record.data_key_id), key, specs)
                    setattr(record, version.key, target)
                await session.execute(
                    update(KeyRotation)
                    .where(
                        KeyRotation.kind == BLIND_INDEX_KIND,
                        KeyRotation.target_version == target,
                    )
                    .values(rewrapped=KeyRotation.rewrapped + len(records))
                )
                after = records[-1].id
            done += len(records)
            if progress:
                progress(done, total)
    async with sessions() as session, session.begin():
        await session.execute(
            update(KeyRotation)
            .where(KeyRotation.kind == BLIND_INDEX_KIND, KeyRotation.target_version == target)
            .values(finished_at=utcnow())
        )
    return RotationResult(target_version=target, rewrapped=done, resumed=resumed)


async def blind_index_versions_in_use(session: AsyncSession) -> dict[int, int]:
    counts: dict[int, int] = {}
    for model in blind_indexed_models():
        specs = blind_index_columns(model)
        version = getattr(model, next(iter(specs.values())).version)
        for value, count in await session.execute(select(version, func.count()).group_by(version)):
            counts[int(value)] = counts.get(int(value), 0) + int(count)
    return counts


async def retire_kek_version(session: AsyncSession, keyring: KeyRing, version: int) -> str:
    """Delete KEK ``version``'s file; refuses the current version and any still in use."""
    status = await key_status(session, keyring)
    if version not in status.versions_on_disk:
        raise KeyRingError(f"key-encryption key version {version} is not in the key ring")
    if version not in status.versions_not_needed or status.rotation_in_progress is not None:
        raise KeyRingError(
            f"key-encryption key version {version} is still needed"
            " (current, in use by data keys, or a rotation is unfinished)"
        )
    path = keyring.kek_path(version)
    keyring.destroy_file(path)
    return path.name


async def retire_blind_index_version(session: AsyncSession, keyring: KeyRing, version: int) -> str:
    """Delete blind-index key ``version``'s file once no row's indexes were made with it."""
    if version not in keyring.blind_index_keys:
        raise KeyRingError(f"blind-index key version {version} is not in the key ring")
    in_use = await blind_index_versions_in_use(session)
    pending = await session.scalar(
        select(KeyRotation.target_version).where(
            KeyRotation.kind == BLIND_INDEX_KIND, KeyRotation.finished_at.is_(None)
        )
    )
    if version == keyring.blind_index_version or in_use.get(version) or pending is not None:
        raise KeyRingError(
            f"blind-index key version {version} is still needed"
            " (current, used by stored indexes, or a rotation is unfinished)"
        )
    path = keyring.keys_dir / blind_index_name(version)
    keyring.destroy_file(path)
    return path.name
