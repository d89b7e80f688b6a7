"""Rotating the audit-signing key (``casemgr keys rotate --audit-signing``).

Each step is idempotent and keyed by what is on disk, so rerunning the command after a
crash at any point finishes the rotation:

1. create the successor, ``audit-signing.next.key``, unless it exists;
2. pin its public key: append it to ``audit-signing.pub`` unless it is there;
3. seal the chain with the current key, then write a key transition signed by it (to the
   checkpoint file and the external anchor) unless the file holds it already; an auditor
   who trusts only the old public key follows it to the new one;
4. promote the successor to ``audit-signing.key`` (the predecessor waits as
   ``audit-signing.retired.key``);
5. destroy the predecessor's private key;
6. record ``keys:rotate`` (kind ``audit-signing``) and seal it with the new key.

Without a successor file, a rerun finishes a rotation whose new key has signed nothing yet
(steps 5-6) and otherwise starts a new one. Old checkpoints keep verifying: their keys stay
in ``audit-signing.pub`` and behind the transitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr import clock
from casemgr.audit.anchors import (
    AnchorFile,
    anchor_lock,
    append_records,
    read_anchor_file,
)
from casemgr.audit.chain import GENESIS_HASH, KeyTransition, key_id
from casemgr.audit.checkpoints import CheckpointRefused, deliver, seal, sign_under_lock
from casemgr.audit.models import AuditEvent
from casemgr.audit.services import Action, record
from casemgr.db import transaction

if TYPE_CHECKING:
    from casemgr.crypto.keyring import KeyRing
    from casemgr.settings import Settings

KIND = "audit-signing"


@dataclass(frozen=True)
class AuditKeyRotation:
    previous_key_id: str
    key_id: str
    resumed: bool
    # The checkpoint the new key signed to close the rotation (None: one existed already).
    checkpoint_seq: int | None


def _resource(new_key_id: str) -> str:
    return f"{KIND}:{new_key_id}"


def _handover_to(anchor: AnchorFile, new_key_id: str) -> KeyTransition | None:
    return next((t for t in anchor.transitions if t.to_key_id == new_key_id), None)


async def _hand_over(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    settings: Settings,
    current: Ed25519PrivateKey,
    successor: Ed25519PrivateKey,
) -> None:
    """Step 3: seal with the current key, then hand over to the successor after that seal."""
    current_id = key_id(current.public_key())
    successor_id = key_id(successor.public_key())
    async with anchor_lock(settings.checkpoint_file):
        anchor = read_anchor_file(settings.checkpoint_file)
        done = next((t for t in anchor.transitions if t.from_key_id == current_id), None)
        if done is not None and done.to_key_id != successor_id:
            raise CheckpointRefused(
                f"key {current_id} has handed over to {done.to_key_id}, not to {successor_id}"
            )
        if done is None:
            await sign_under_lock(
                sessions,
                current,
                keyring.audit_public_keys,
                settings.checkpoint_file,
                seal_deadline=settings.seal_deadline,
                adopt_unanchored=False,
                batch_size=20_000,
            )
            anchor = read_anchor_file(settings.checkpoint_file)
            last = anchor.checkpoints[-1] if anchor.checkpoints else None
            seq, chain_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
            transition = KeyTransition.sign(
                current, successor.public_key(), seq, chain_hash, clock.now()
            )
            append_records(anchor, [transition])
        await deliver(settings.checkpoint_file, settings.audit_anchor_url)


async def _rotation_recorded(sessions: async_sessionmaker[AsyncSession], new_key_id: str) -> bool:
    async with sessions() as session:
        return bool(
            await session.scalar(
                select(
                    exists().where(
                        AuditEvent.action == str(Action.KEYS_ROTATE),
                        AuditEvent.resource_id == _resource(new_key_id),
                    )
                )
            )
        )


async def _finish(
    sessions: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    settings: Settings,
    previous_id: str,
    new_id: str,
    resumed: bool,
) -> AuditKeyRotation:
    """Steps 5 and 6."""
    keyring.destroy_retired_audit_signing_key()
    if not await _rotation_recorded(sessions, new_id):
        async with transaction(sessions) as session:
            await record(
                session,
                Action.KEYS_ROTATE,
                actor=None,
                resource_type="key_ring",
                resource_id=_resource(new_id),
                detail={"kind": KIND, "from": previous_id, "to": new_id, "resumed": resumed},
            )
    checkpoint = await seal(sessions, keyring, settings)
    return AuditKeyRotation(
        previous_id, new_id, resumed, checkpoint.seq if checkpoint is not None else None
    )


async def rotate_audit_signing_key(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, settings: Settings
) -> AuditKeyRotation:
    """Replace the audit-signing key, or finish the replacement a crash interrupted."""
    current = keyring.audit_signing_key
    current_id = key_id(current.public_key())
    successor = keyring.next_audit_signing_key(create=False)
    resumed = successor is not None
    if successor is None:
        anchor = read_anchor_file(settings.checkpoint_file)
        handover = _handover_to(anchor, current_id)
        if handover is not None and not any(cp.key_id == current_id for cp in anchor.checkpoints):
            # Promoted, but the new key has not sealed the rotation yet.
            return await _finish(
                sessions, keyring, settings, handover.from_key_id, current_id, resumed=True
            )
        successor = keyring.next_audit_signing_key(create=True)
        assert successor is not None
    keyring.pin_audit_public_key(successor.public_key())
    await _hand_over(sessions, keyring, settings, current, successor)
    keyring.promote_next_audit_signing_key()
    return await _finish(
        sessions, keyring, settings, current_id, key_id(successor.public_key()), resumed
    )
