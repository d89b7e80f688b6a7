"""Encryption in one place: the key ring, data keys, field sealing and blind indexes.

Features never touch key bytes: they ask ``Crypto`` for the ``FieldCipher`` of a record's
data key, after authorization has allowed the access.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.crypto.envelope import (
    DecryptionError,
    FieldCipher,
    blind_index,
    new_data_key,
    unwrap_with,
    wrap_with,
)
from casemgr.crypto.keyring import KeyRing, KeyRingError, create_key_ring
from casemgr.crypto.models import DataKey
from casemgr.db import new_id, utcnow

__all__ = [
    "Crypto",
    "DataKeyDestroyed",
    "DecryptionError",
    "FieldCipher",
    "KeyRing",
    "KeyRingError",
    "create_key_ring",
]


class DataKeyDestroyed(DecryptionError):
    """The data key was crypto-shredded: what it sealed is gone for good."""


class Crypto:
    def __init__(
        self, keyring: KeyRing, on_shred: Callable[[uuid.UUID], None] | None = None
    ) -> None:
        self.keyring = keyring
        # Told of each data key before it is destroyed: the shred log (casemgr.backup),
        # which keeps erased students erased when an older backup is restored (issue 11).
        self.on_shred = on_shred
        # One AEAD object per KEK version: building one costs more than an unwrap.
        self._kek_aeads: dict[int, tuple[bytes, AESGCM]] = {}

    def kek_aead(self, version: int) -> AESGCM:
        kek = self.keyring.kek(version)
        cached = self._kek_aeads.get(version)
        if cached is None or cached[0] != kek:
            cached = (kek, AESGCM(kek))
            self._kek_aeads[version] = cached
        return cached[1]

    def new_data_key(
        self, session: AsyncSession, purpose: str, label: str | None = None
    ) -> FieldCipher:
        """Create a data key (added to ``session``) and return its cipher."""
        key_id = new_id()
        raw = new_data_key()
        version = self.keyring.current_kek_version
        session.add(
            DataKey(
                id=key_id,
                purpose=purpose,
                label=label,
                kek_version=version,
                wrapped=wrap_with(self.kek_aead(version), version, key_id, raw),
            )
        )
        return FieldCipher(key_id, raw)

    def open_data_key(
        self, key_id: uuid.UUID, kek_version: int | None, wrapped: bytes | None
    ) -> FieldCipher:
        if wrapped is None or kek_version is None:
            raise DataKeyDestroyed("the data key was destroyed")
        return FieldCipher(key_id, unwrap_with(self.kek_aead(kek_version), key_id, wrapped))

    async def cipher(self, session: AsyncSession, key_id: uuid.UUID) -> FieldCipher:
        row = (
            await session.execute(
                select(DataKey.kek_version, DataKey.wrapped).where(DataKey.id == key_id)
            )
        ).one_or_none()
        if row is None:
            raise DataKeyDestroyed("no such data key")
        return self.open_data_key(key_id, row.kek_version, row.wrapped)

    async def ciphers(
        self, session: AsyncSession, key_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, FieldCipher]:
        """Unwrap several data keys in one query (rosters, exports)."""
        if not key_ids:
            return {}
        rows = await session.execute(
            select(DataKey.id, DataKey.kek_version, DataKey.wrapped).where(
                DataKey.id.in_(key_ids), DataKey.wrapped.is_not(None)
            )
        )
        # Destroyed keys are left out: what they sealed is gone.
        return {r.id: self.open_data_key(r.id, r.kek_version, r.wrapped) for r in rows}

    async def system_cipher(self, session: AsyncSession, label: str) -> FieldCipher:
        """The cipher of a named system key (created on first use)."""
        row = (
            await session.execute(
                select(DataKey.id, DataKey.kek_version, DataKey.wrapped).where(
                    DataKey.label == label
                )
            )
        ).one_or_none()
        if row is not None:
            return self.open_data_key(row.id, row.kek_version, row.wrapped)
        try:
            async with session.begin_nested():
                cipher = self.new_data_key(session, "system", label)
                await session.flush()
        except IntegrityError:
            # Another process created it first.
            return await self.system_cipher(session, label)
        return cipher

    async def shred(self, session: AsyncSession, key_id: uuid.UUID) -> None:
        """Destroy a data key: every ciphertext sealed under it becomes unrecoverable."""
        if self.on_shred is not None:
            # Logged before the erasure commits: a crash can only log one that was asked for.
            await asyncio.to_thread(self.on_shred, key_id)
        await session.execute(
            update(DataKey)
            .where(DataKey.id == key_id)
            .values(wrapped=None, kek_version=None, destroyed_at=utcnow())
        )

    def blind_index(self, kind: str, value: str, scope: str = "") -> bytes:
        """The index under the current blind-index key (what new rows store)."""
        return blind_index(self.keyring.blind_index_key, kind, value, scope)

    def blind_indexes(self, kind: str, value: str, scope: str = "") -> list[bytes]:
        """The index under every blind-index key in the ring, current first.

        Lookups match any of them, so they keep working while ``keys rotate
        --blind-index`` moves rows from the old key to the new one.
        """
        return [
            blind_index(key, kind, value, scope)
            for _, key in sorted(self.keyring.blind_index_keys.items(), reverse=True)
        ]
