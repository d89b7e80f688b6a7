"""Envelope encryption primitives: data keys wrapped by the KEK, fields sealed by data keys.

Field ciphertext layout (all integers big-endian)::

    0      1      2 .. 18         18 .. 30   30 ..
    fmt    alg    data key id     nonce      AES-256-GCM ciphertext + 16-byte tag

The associated data is the 18-byte header followed by ``table.column.row_id``, so a
ciphertext opens only in the row and column it was written for, under the key it names.

Format 2 (written today) seals a *framed* plaintext, padded to a size bucket so that the
ciphertext's length tells at most the bucket (SPEC P1)::

    0      1 .. n+1    n+1     n+2 .. bucket
    tag    payload     0x80    0x00 ...

``tag`` is 0x01 for a value and 0x00 for "no value", so an absent optional field seals to
the same length as a short present one. Buckets start at ``min_bucket`` (32 bytes by
default, which holds every value of every closed set) and double up to 4 KiB, then grow in
4 KiB steps. Format 1 (the unpadded plaintext) is still opened, never written; ``casemgr
keys reseal`` (and ``keys rotate``) rewrite format-1 fields as format 2.

Wrapped data key layout::

    0      1      2 .. 6          6 .. 18    18 ..
    fmt    alg    KEK version     nonce      AES-256-GCM(data key) + tag

with the data key's id as associated data, so a wrapped key cannot be swapped between rows.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import uuid
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casemgr.crypto.sealed import spec_of

FORMAT_V1 = 0x01
FORMAT_V2 = 0x02
FIELD_FORMATS = (FORMAT_V1, FORMAT_V2)
ALG_AES_256_GCM = 0x01
NONCE_BYTES = 12
TAG_BYTES = 16
FIELD_HEADER_BYTES = 2 + 16
WRAP_HEADER_BYTES = 2 + 4
DATA_KEY_BYTES = 32
BLIND_INDEX_BYTES = 8
MIN_BUCKET = 32
BUCKET_STEP = 4096

_PRESENT = 0x01
_ABSENT = 0x00
_PAD_MARK = 0x80


class DecryptionError(Exception):
    """A ciphertext failed to open: wrong key, wrong place or tampered.

    The message never includes plaintext or ciphertext.
    """


def field_context(table: str, column: str, row_id: uuid.UUID | str) -> bytes:
    return f"{table}.{column}.{row_id}".encode()


def bucket_size(framed_length: int, min_bucket: int = MIN_BUCKET) -> int:
    """The padded length of a framed plaintext: doubling from ``min_bucket`` up to 4 KiB."""
    size = max(min_bucket, 1)
    while size < framed_length and size < BUCKET_STEP:
        size *= 2
    if size >= framed_length:
        return size
    return -(-framed_length // BUCKET_STEP) * BUCKET_STEP


def frame(payload: bytes | None, min_bucket: int = MIN_BUCKET) -> bytes:
    body = bytes((_ABSENT,)) if payload is None else bytes((_PRESENT,)) + payload
    size = bucket_size(len(body) + 1, min_bucket)
    return body + bytes((_PAD_MARK,)) + bytes(size - len(body) - 1)


def unframe(framed: bytes) -> bytes | None:
    end = len(framed.rstrip(b"\x00"))
    if end < 2 or framed[end - 1] != _PAD_MARK or framed[0] not in (_PRESENT, _ABSENT):
        raise DecryptionError("malformed padding")
    if framed[0] == _ABSENT:
        if end != 2:
            raise DecryptionError("malformed padding")
        return None
    return framed[1 : end - 1]


class FieldCipher:
    """Seals and opens the fields of one data key (one student, or one system purpose).

    Features use the record-level methods (``seal_fields``, ``open_field``,
    ``open_fields``) on columns declared with ``casemgr.crypto.sealed.sealed``; the
    column's declaration says how its value is encoded and padded.
    """

    __slots__ = ("_aead", "key_id")

    def __init__(self, key_id: uuid.UUID, key: bytes) -> None:
        if len(key) != DATA_KEY_BYTES:
            raise ValueError("data keys are 32 bytes")
        self.key_id = key_id
        self._aead = AESGCM(key)

    # -- payload level ---------------------------------------------------------------

    def _header(self, fmt: int = FORMAT_V2) -> bytes:
        return bytes((fmt, ALG_AES_256_GCM)) + self.key_id.bytes

    def seal_payload(
        self,
        table: str,
        column: str,
        row_id: uuid.UUID | str,
        payload: bytes | None,
        *,
        min_bucket: int = MIN_BUCKET,
    ) -> bytes:
        """Seal ``payload`` (None: "no value") padded to its bucket (format 2)."""
        header = self._header()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(
            nonce, frame(payload, min_bucket), header + b"|" + field_context(table, column, row_id)
        )
        return header + nonce + sealed

    def open_payload(
        self, table: str, column: str, row_id: uuid.UUID | str, blob: bytes
    ) -> bytes | None:
        if len(blob) < FIELD_HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
            raise DecryptionError(f"{table}.{column}: ciphertext too short")
        header = bytes(blob[:FIELD_HEADER_BYTES])
        if header[0] not in FIELD_FORMATS or header[1] != ALG_AES_256_GCM:
            raise DecryptionError(f"{table}.{column}: unknown ciphertext format")
        if header[2:] != self.key_id.bytes:
            raise DecryptionError(f"{table}.{column}: sealed under another data key")
        nonce = bytes(blob[FIELD_HEADER_BYTES : FIELD_HEADER_BYTES + NONCE_BYTES])
        try:
            plain = self._aead.decrypt(
                nonce,
                bytes(blob[FIELD_HEADER_BYTES + NONCE_BYTES :]),
                header + b"|" + field_context(table, column, row_id),
            )
        except InvalidTag:
            raise DecryptionError(f"{table}.{column}: ciphertext does not open here") from None
        if header[0] == FORMAT_V1:
            return plain
        try:
            return unframe(plain)
        except DecryptionError:
            raise DecryptionError(f"{table}.{column}: malformed padding") from None

    # -- text level (system secrets, tests) -------------------------------------------

    def seal(self, table: str, column: str, row_id: uuid.UUID | str, value: str) -> bytes:
        return self.seal_payload(table, column, row_id, value.encode("utf-8"))

    def open(self, table: str, column: str, row_id: uuid.UUID | str, blob: bytes) -> str:
        payload = self.open_payload(table, column, row_id, blob)
        if payload is None:
            raise DecryptionError(f"{table}.{column}: holds no value")
        return payload.decode("utf-8")

    def seal_optional(
        self, table: str, column: str, row_id: uuid.UUID | str, value: str | None
    ) -> bytes:
        """Seal a value or its absence: both give a ciphertext of the same length."""
        return self.seal_payload(
            table, column, row_id, None if value is None else value.encode("utf-8")
        )

    def open_optional(
        self, table: str, column: str, row_id: uuid.UUID | str, blob: bytes | None
    ) -> str | None:
        if blob is None:
            return None
        payload = self.open_payload(table, column, row_id, blob)
        return None if payload is None else payload.decode("utf-8")

    # -- record level (columns declared with ``sealed``) -------------------------------

    def seal_fields(self, record: Any, **values: Any) -> None:
        """Seal each value into the record's declared column, bound to its table and row.

        The record's ``id`` must be set: it is part of every ciphertext's associated data.
        """
        row_id = record.id
        if row_id is None:
            raise ValueError("give the record its id before sealing its fields")
        table = record.__tablename__
        for column, value in values.items():
            spec = spec_of(type(record), column)
            if value is None and not spec.optional:
                raise ValueError(f"{table}.{column} needs a value")
            if value is None and not spec.hide_absence:
                blob = None
            else:
                blob = self.seal_payload(
                    table,
                    column,
                    row_id,
                    None if value is None else spec.encode(value),
                    min_bucket=spec.min_bucket,
                )
            setattr(record, column, blob)

    def open_field(self, record: Any, column: str) -> Any:
        spec = spec_of(type(record), column)
        blob = getattr(record, column)
        if blob is None:
            if spec.optional:
                return None
            raise DecryptionError(f"{record.__tablename__}.{column}: holds no value")
        payload = self.open_payload(record.__tablename__, column, record.id, blob)
        if payload is None:
            if spec.optional:
                return None
            raise DecryptionError(f"{record.__tablename__}.{column}: holds no value")
        return spec.decode(payload)

    def open_fields(self, record: Any, *columns: str) -> dict[str, Any]:
        """The named sealed columns (all of the record's, when none are named)."""
        from casemgr.crypto.sealed import sealed_columns

        names = columns or tuple(sealed_columns(type(record)))
        return {column: self.open_field(record, column) for column in names}


def field_format(blob: bytes) -> int:
    """The format byte of a field ciphertext (1 or 2)."""
    if len(blob) < FIELD_HEADER_BYTES or blob[0] not in FIELD_FORMATS:
        raise DecryptionError("unknown ciphertext format")
    return int(blob[0])


def key_id_of(blob: bytes) -> uuid.UUID:
    """The data key a field ciphertext names in its header."""
    field_format(blob)
    return uuid.UUID(bytes=bytes(blob[2:FIELD_HEADER_BYTES]))


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def wrap_header(kek_version: int) -> bytes:
    return bytes((FORMAT_V1, ALG_AES_256_GCM)) + struct.pack(">I", kek_version)


def wrap_data_key(kek: bytes, kek_version: int, key_id: uuid.UUID, data_key: bytes) -> bytes:
    return wrap_with(AESGCM(kek), kek_version, key_id, data_key)


def wrap_with(aead: AESGCM, kek_version: int, key_id: uuid.UUID, data_key: bytes) -> bytes:
    """``wrap_data_key`` with a prepared AEAD object (one per KEK, for batches)."""
    header = wrap_header(kek_version)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + aead.encrypt(nonce, data_key, header + b"|dk|" + key_id.bytes)


def wrapped_kek_version(wrapped: bytes) -> int:
    if len(wrapped) < WRAP_HEADER_BYTES or wrapped[0] != FORMAT_V1:
        raise DecryptionError("unknown wrapped-key format")
    return int(struct.unpack(">I", bytes(wrapped[2:WRAP_HEADER_BYTES]))[0])


def unwrap_data_key(kek: bytes, key_id: uuid.UUID, wrapped: bytes) -> bytes:
    return unwrap_with(AESGCM(kek), key_id, wrapped)


def unwrap_with(aead: AESGCM, key_id: uuid.UUID, wrapped: bytes) -> bytes:
    header = bytes(wrapped[:WRAP_HEADER_BYTES])
    nonce = bytes(wrapped[WRAP_HEADER_BYTES : WRAP_HEADER_BYTES + NONCE_BYTES])
    try:
        return aead.decrypt(
            nonce,
            bytes(wrapped[WRAP_HEADER_BYTES + NONCE_BYTES :]),
            header + b"|dk|" + key_id.bytes,
        )
    except InvalidTag:
        raise DecryptionError("data key does not unwrap under this key-encryption key") from None


def blind_index(key: bytes, kind: str, value: str, scope: str = "") -> bytes:
    """Keyed, truncated index for exact-match lookup (``kind`` separates the domains).

    Truncation to 64 bits keeps the index useless for confirming guesses at scale while
    collisions stay rare; callers always confirm a match by decrypting.
    """
    message = b"\x1f".join((kind.encode(), scope.encode(), value.encode("utf-8")))
    return hmac.new(key, message, hashlib.sha256).digest()[:BLIND_INDEX_BYTES]
