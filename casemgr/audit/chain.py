"""The hash chain and checkpoint signatures, free of any database code."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS_HASH = bytes(32)
CHECKPOINT_CONTEXT = b"casemgr/audit-checkpoint/v1"

_encode = msgspec.json.Encoder().encode


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    prev_hash: bytes,
    seq: int,
    at: datetime,
    actor_id: uuid.UUID | None,
    role: str | None,
    school_id: uuid.UUID | None,
    action: str,
    resource_type: str,
    resource_id: str | None,
    student_id: uuid.UUID | None,
    outcome: str,
    purpose: str | None,
    emergency: bool,
    detail: str | None,
    client_addr: str | None = None,
) -> bytes:
    """SHA-256 over the previous hash and an unambiguous encoding of every column.

    The columns are encoded as one JSON array by msgspec, natively: ids as canonical
    UUID strings, ``at`` as RFC 3339 in UTC. That keeps the encoding independent of the
    backend's storage and fast enough to verify millions of events. ``client_addr`` came
    later: events without one hash as they always did (a 13-element array), events with
    one as a 14-element array, so the two can never be confused.
    """
    columns: tuple[object, ...] = (
        seq,
        at,
        actor_id,
        role,
        school_id,
        action,
        resource_type,
        resource_id,
        student_id,
        outcome,
        purpose,
        emergency,
        detail,
    )
    if client_addr is not None:
        columns = (*columns, client_addr)
    return hashlib.sha256(prev_hash + _encode(columns)).digest()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_message(seq: int, chain_hash: bytes, at: datetime) -> bytes:
    return b"|".join(
        (CHECKPOINT_CONTEXT, str(seq).encode(), chain_hash.hex().encode(), _ts(at).encode())
    )


def sign_checkpoint(
    private_key: Ed25519PrivateKey, seq: int, chain_hash: bytes, at: datetime
) -> bytes:
    return private_key.sign(checkpoint_message(seq, chain_hash, at))


def checkpoint_signature_ok(
    public_key: Ed25519PublicKey, seq: int, chain_hash: bytes, at: datetime, signature: bytes
) -> bool:
    try:
        public_key.verify(signature, checkpoint_message(seq, chain_hash, at))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: bytes
    at: datetime
    key_id: str
    signature: bytes

    def to_json_line(self) -> str:
        return (
            _encode(
                {
                    "seq": self.seq,
                    "hash": self.hash.hex(),
                    "at": _ts(self.at),
                    "key_id": self.key_id,
                    "signature": self.signature.hex(),
                }
            ).decode()
            + "\n"
        )

    @classmethod
    def from_json_line(cls, line: str) -> Checkpoint:
        raw = msgspec.json.decode(line)
        return cls(
            seq=int(raw["seq"]),
            hash=bytes.fromhex(raw["hash"]),
            at=datetime.strptime(raw["at"], "%Y-%m-%dT%H:%M:%S.%f%z"),
            key_id=str(raw["key_id"]),
            signature=bytes.fromhex(raw["signature"]),
        )
