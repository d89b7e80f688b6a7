"""Key-encryption-key rotation: rewrap every data key under a new KEK version.

Online (readers keep working: both versions stay in the ring while rows move), batched
(one short transaction per batch) and resumable (an unfinished ``key_rotations`` row is
picked up by the next run, which continues where the last committed batch stopped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.crypto.envelope import unwrap_data_key, wrap_data_key
from casemgr.crypto.keyring import KeyRing, KeyRingError
from casemgr.crypto.models import DataKey, KeyRotation
from casemgr.db import utcnow

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
        select(KeyRotation.target_version).where(KeyRotation.finished_at.is_(None))
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
            select(KeyRotation).where(KeyRotation.finished_at.is_(None)).order_by(KeyRotation.id)
        )
        resumed = pending is not None
        if pending is None:
            on_disk = keyring.kek_versions
            recorded = await session.scalar(select(func.max(KeyRotation.target_version)))
            target = max([*on_disk, recorded or 0]) + 1
            session.add(KeyRotation(target_version=target, rewrapped=0))
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
    new_kek = keyring.kek(target)

    async with sessions() as session:
        remaining = await session.scalar(
            select(func.count()).where(DataKey.wrapped.is_not(None), DataKey.kek_version != target)
        )
        done_before = await session.scalar(
            select(KeyRotation.rewrapped).where(KeyRotation.target_version == target)
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
    while True:
        async with sessions() as session, session.begin():
            query = (
                select(DataKey.id, DataKey.kek_version, DataKey.wrapped)
                .where(DataKey.wrapped.is_not(None), DataKey.kek_version != target)
                .order_by(DataKey.id)
                .limit(batch_size)
            )
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                # Concurrent rotators (or a leftover one) split the work instead of blocking.
                rows = (await session.execute(query.with_for_update(skip_locked=True))).all()
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
            params = []
            for key_id, old_version, wrapped in rows:
                # The query selects wrapped (not destroyed) keys only: both are set.
                assert old_version is not None and wrapped is not None
                raw = unwrap_data_key(keyring.kek(old_version), key_id, wrapped)
                params.append(
                    {
                        "key_id": key_id,
                        "old_version": old_version,
                        "new_wrapped": wrap_data_key(new_kek, target, key_id, raw),
                    }
                )
            await session.execute(stmt, params)
            await session.execute(
                update(KeyRotation)
                .where(KeyRotation.target_version == target)
                .values(rewrapped=KeyRotation.rewrapped + len(rows))
            )
        done += len(rows)
        if progress:
            progress(done, total)

    async with sessions() as session, session.begin():
        await session.execute(
            update(KeyRotation)
            .where(KeyRotation.target_version == target)
            .values(finished_at=utcnow())
        )
    return RotationResult(
        target_version=target, rewrapped=done + int(done_before or 0), resumed=resumed
    )
