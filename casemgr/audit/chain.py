"""The hash chain, checkpoint signatures and key transitions, free of any database code.

Lines of the checkpoint file (and of the external anchor) are JSON objects, one per line:

- a checkpoint, ``{"seq", "hash", "at", "key_id", "signature"}``: Ed25519 over
  ``casemgr/audit-checkpoint/v1|seq|hash-hex|at``, "event ``seq`` has chain hash ``hash``";
- a key transition, ``{"type": "key-transition", "seq", "hash", "at", "from_key_id",
  "to_key_id", "to_public_key", "signature"}``: the retiring key's signature over
  ``casemgr/audit-key-transition/v1|from|to|public-hex|seq|hash-hex|at``, "after the
  checkpoint at ``seq`` (``hash``), key ``to`` (raw public bytes ``to_public_key``) signs in
  my place". A verifier that trusts ``from`` thereby trusts ``to``.

A key id is the first 16 hex digits of SHA-256 over the raw 32-byte public key.
"""

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
TRANSITION_CONTEXT = b"casemgr/audit-key-transition/v1"
TRANSITION_TYPE = "key-transition"

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


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public_bytes(public_key)).hexdigest()[:16]


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
        record = parse_record(line)
        if not isinstance(record, Checkpoint):
            raise ValueError("not a checkpoint")
        return record


def transition_message(
    from_key_id: str, to_key_id: str, to_public: bytes, seq: int, chain_hash: bytes, at: datetime
) -> bytes:
    return b"|".join(
        (
            TRANSITION_CONTEXT,
            from_key_id.encode(),
            to_key_id.encode(),
            to_public.hex().encode(),
            str(seq).encode(),
            chain_hash.hex().encode(),
            _ts(at).encode(),
        )
    )


@dataclass(frozen=True)
class KeyTransition:
    """The retiring signing key hands over to its successor after checkpoint ``seq``."""

    seq: int
    hash: bytes
    at: datetime
    from_key_id: str
    to_public: bytes
    signature: bytes

    @property
    def to_key_id(self) -> str:
        return hashlib.sha256(self.to_public).hexdigest()[:16]

    @property
    def to_public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.to_public)

    def message(self) -> bytes:
        return transition_message(
            self.from_key_id, self.to_key_id, self.to_public, self.seq, self.hash, self.at
        )

    @classmethod
    def sign(
        cls,
        retiring: Ed25519PrivateKey,
        successor: Ed25519PublicKey,
        seq: int,
        chain_hash: bytes,
        at: datetime,
    ) -> KeyTransition:
        unsigned = cls(
            seq, chain_hash, at, key_id(retiring.public_key()), raw_public_bytes(successor), b""
        )
        return cls(
            seq,
            chain_hash,
            at,
            unsigned.from_key_id,
            unsigned.to_public,
            retiring.sign(unsigned.message()),
        )

    def signature_ok(self, retiring: Ed25519PublicKey) -> bool:
        try:
            retiring.verify(self.signature, self.message())
        except InvalidSignature:
            return False
        return True

    def to_json_line(self) -> str:
        return (
            _encode(
                {
                    "type": TRANSITION_TYPE,
                    "seq": self.seq,
                    "hash": self.hash.hex(),
                    "at": _ts(self.at),
                    "from_key_id": self.from_key_id,
                    "to_key_id": self.to_key_id,
                    "to_public_key": self.to_public.hex(),
                    "signature": self.signature.hex(),
                }
            ).decode()
            + "\n"
        )


Record = Checkpoint | KeyTransition


def _parse_ts(value: object) -> datetime:
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%f%z")


def parse_record(line: str) -> Record:
    """One line of a checkpoint file or of an anchor's copy of it.

    Anything before the first ``{`` is ignored, so a copy kept by a syslog receiver (which
    prefixes each message with a date, a host and a tag) reads as it is. Raises ValueError,
    KeyError or msgspec.DecodeError for a line that is not a record.
    """
    start = line.find("{")
    if start < 0:
        raise ValueError("no JSON object on the line")
    raw = msgspec.json.decode(line[start:].strip())
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    kind = raw.get("type")
    if kind is None:
        return Checkpoint(
            seq=int(raw["seq"]),
            hash=bytes.fromhex(raw["hash"]),
            at=_parse_ts(raw["at"]),
            key_id=str(raw["key_id"]),
            signature=bytes.fromhex(raw["signature"]),
        )
    if kind != TRANSITION_TYPE:
        raise ValueError(f"unknown record type {kind!r}")
    transition = KeyTransition(
        seq=int(raw["seq"]),
        hash=bytes.fromhex(raw["hash"]),
        at=_parse_ts(raw["at"]),
        from_key_id=str(raw["from_key_id"]),
        to_public=bytes.fromhex(raw["to_public_key"]),
        signature=bytes.fromhex(raw["signature"]),
    )
    if len(transition.to_public) != 32 or transition.to_key_id != raw["to_key_id"]:
        raise ValueError("the key transition's public key does not match its id")
    return transition
