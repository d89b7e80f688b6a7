"""Envelope encryption primitives: data keys wrapped by the KEK, fields sealed by data keys.

Field ciphertext layout (all integers big-endian)::

    0      1      2 .. 18         18 .. 30   30 ..
    fmt    alg    data key id     nonce      AES-256-GCM ciphertext + 16-byte tag

The associated data is the 18-byte header followed by ``table.column.row_id``, so a
ciphertext opens only in the row and column it was written for, under the key it names.

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

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = 0x01
ALG_AES_256_GCM = 0x01
NONCE_BYTES = 12
FIELD_HEADER_BYTES = 2 + 16
WRAP_HEADER_BYTES = 2 + 4
DATA_KEY_BYTES = 32
BLIND_INDEX_BYTES = 8


class DecryptionError(Exception):
    """A ciphertext failed to open: wrong key, wrong place or tampered.

    The message never includes plaintext or ciphertext.
    """


def field_context(table: str, column: str, row_id: uuid.UUID | str) -> bytes:
    return f"{table}.{column}.{row_id}".encode()


class FieldCipher:
    """Seals and opens the fields of one data key (one student, or one system purpose)."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key_id: uuid.UUID, key: bytes) -> None:
        if len(key) != DATA_KEY_BYTES:
            raise ValueError("data keys are 32 bytes")
        self.key_id = key_id
        self._aead = AESGCM(key)

    def _header(self) -> bytes:
        return bytes((FORMAT_V1, ALG_AES_256_GCM)) + self.key_id.bytes

    def seal_bytes(self, table: str, column: str, row_id: uuid.UUID | str, data: bytes) -> bytes:
        header = self._header()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(
            nonce, data, header + b"|" + field_context(table, column, row_id)
        )
        return header + nonce + sealed

    def open_bytes(self, table: str, column: str, row_id: uuid.UUID | str, blob: bytes) -> bytes:
        if len(blob) < FIELD_HEADER_BYTES + NONCE_BYTES + 16:
            raise DecryptionError(f"{table}.{column}: ciphertext too short")
        header = bytes(blob[:FIELD_HEADER_BYTES])
        if header[0] != FORMAT_V1 or header[1] != ALG_AES_256_GCM:
            raise DecryptionError(f"{table}.{column}: unknown ciphertext format")
        if header[2:] != self.key_id.bytes:
            raise DecryptionError(f"{table}.{column}: sealed under another data key")
        nonce = bytes(blob[FIELD_HEADER_BYTES : FIELD_HEADER_BYTES + NONCE_BYTES])
        try:
            return self._aead.decrypt(
                nonce,
                bytes(blob[FIELD_HEADER_BYTES + NONCE_BYTES :]),
                header + b"|" + field_context(table, column, row_id),
            )
        except InvalidTag:
            raise DecryptionError(f"{table}.{column}: ciphertext does not open here") from None

    def seal(self, table: str, column: str, row_id: uuid.UUID | str, value: str) -> bytes:
        return self.seal_bytes(table, column, row_id, value.encode("utf-8"))

    def open(self, table: str, column: str, row_id: uuid.UUID | str, blob: bytes) -> str:
        return self.open_bytes(table, column, row_id, blob).decode("utf-8")

    def seal_optional(
        self, table: str, column: str, row_id: uuid.UUID | str, value: str | None
    ) -> bytes | None:
        return None if value is None else self.seal(table, column, row_id, value)

    def open_optional(
        self, table: str, column: str, row_id: uuid.UUID | str, blob: bytes | None
    ) -> str | None:
        return None if blob is None else self.open(table, column, row_id, blob)


def key_id_of(blob: bytes) -> uuid.UUID:
    """The data key a field ciphertext names in its header."""
    if len(blob) < FIELD_HEADER_BYTES or blob[0] != FORMAT_V1:
        raise DecryptionError("unknown ciphertext format")
    return uuid.UUID(bytes=bytes(blob[2:FIELD_HEADER_BYTES]))


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def wrap_data_key(kek: bytes, kek_version: int, key_id: uuid.UUID, data_key: bytes) -> bytes:
    header = bytes((FORMAT_V1, ALG_AES_256_GCM)) + struct.pack(">I", kek_version)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(kek).encrypt(nonce, data_key, header + b"|dk|" + key_id.bytes)


def wrapped_kek_version(wrapped: bytes) -> int:
    if len(wrapped) < WRAP_HEADER_BYTES or wrapped[0] != FORMAT_V1:
        raise DecryptionError("unknown wrapped-key format")
    return int(struct.unpack(">I", bytes(wrapped[2:WRAP_HEADER_BYTES]))[0])


def unwrap_data_key(kek: bytes, key_id: uuid.UUID, wrapped: bytes) -> bytes:
    header = bytes(wrapped[:WRAP_HEADER_BYTES])
    nonce = bytes(wrapped[WRAP_HEADER_BYTES : WRAP_HEADER_BYTES + NONCE_BYTES])
    try:
        return AESGCM(kek).decrypt(
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
