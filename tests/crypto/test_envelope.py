"""Envelope primitives without a database: field sealing, data-key wrapping, blind indexes."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casemgr.crypto.envelope import (
    ALG_AES_256_GCM,
    BLIND_INDEX_BYTES,
    FIELD_HEADER_BYTES,
    FORMAT_V1,
    FORMAT_V2,
    MIN_BUCKET,
    NONCE_BYTES,
    DecryptionError,
    FieldCipher,
    blind_index,
    bucket_size,
    field_format,
    key_id_of,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
    wrapped_kek_version,
)

ROW = uuid.UUID("6f1c2a52-8d0e-4c55-9a43-2f1d6b7e9c10")
OTHER_ROW = uuid.UUID("0b7e4d1a-3c2f-4e8b-8a5d-7c6e1f2a3b4c")
TAG_BYTES = 16


@pytest.fixture
def cipher() -> FieldCipher:
    return FieldCipher(uuid.uuid4(), new_data_key())


@pytest.mark.parametrize("value", ["Ada Lovelace", "王小明", "北京市朝阳区测试路1号 (2单元)", ""])
def test_seal_then_open_returns_the_value(cipher: FieldCipher, value: str) -> None:
    blob = cipher.seal("students", "full_name", ROW, value)
    assert cipher.open("students", "full_name", ROW, blob) == value
    assert value.encode() not in blob or value == ""


def test_ciphertext_layout_has_versioned_header_nonce_and_tag(cipher: FieldCipher) -> None:
    value = "王小明"
    blob = cipher.seal("students", "full_name", ROW, value)
    assert blob[0] == FORMAT_V2
    assert blob[1] == ALG_AES_256_GCM
    assert key_id_of(blob) == cipher.key_id
    # The plaintext is padded to its 32-byte bucket before sealing.
    assert len(blob) == FIELD_HEADER_BYTES + NONCE_BYTES + MIN_BUCKET + TAG_BYTES


def _seal_v1(cipher: FieldCipher, key: bytes, column: str, value: str) -> bytes:
    """A format-1 ciphertext as the foundation wrote it: unpadded plaintext."""
    header = bytes((FORMAT_V1, ALG_AES_256_GCM)) + cipher.key_id.bytes
    nonce = os.urandom(NONCE_BYTES)
    aad = header + b"|" + f"students.{column}.{ROW}".encode()
    return header + nonce + AESGCM(key).encrypt(nonce, value.encode(), aad)


def test_format_1_ciphertexts_still_open() -> None:
    key = new_data_key()
    cipher = FieldCipher(uuid.uuid4(), key)
    old = _seal_v1(cipher, key, "full_name", "王小明")
    assert field_format(old) == FORMAT_V1
    assert cipher.open("students", "full_name", ROW, old) == "王小明"
    assert cipher.open_optional("students", "full_name", ROW, old) == "王小明"
    # Moved elsewhere it fails like any other ciphertext.
    with pytest.raises(DecryptionError):
        cipher.open("students", "address", ROW, old)


@pytest.mark.parametrize(
    "closed_set",
    [
        ["female", "male"],
        ["orphan", "single_parent", "disability", "financial_hardship", "left_behind"],
        ["minimal", "mild", "moderate", "moderately_severe", "severe", "typical", "borderline"],
        ["no_concern", "monitor", "support", "refer", "urgent"],
        ["below_threshold", "pending_review", "reviewed", "expired", "open", "closed"],
    ],
)
def test_every_value_of_a_closed_set_seals_to_one_length(
    cipher: FieldCipher, closed_set: list[str]
) -> None:
    lengths = {len(cipher.seal("t", "c", ROW, value)) for value in closed_set}
    assert len(lengths) == 1


def test_names_reveal_at_most_their_bucket(cipher: FieldCipher) -> None:
    two, four = "王明", "欧阳小明"
    assert len(cipher.seal("students", "full_name", ROW, two)) == len(
        cipher.seal("students", "full_name", ROW, four)
    )
    # Absence seals to the same length as a short value.
    assert len(cipher.seal_optional("students", "national_id", ROW, None)) == len(
        cipher.seal_optional("students", "national_id", ROW, "110105201301010015")
    )


@pytest.mark.parametrize(
    ("framed", "bucket"),
    [(1, 32), (32, 32), (33, 64), (100, 128), (4096, 4096), (4097, 8192), (9000, 12288)],
)
def test_bucket_sizes_double_then_grow_in_4k_steps(framed: int, bucket: int) -> None:
    assert bucket_size(framed) == bucket


def test_padding_is_authenticated(cipher: FieldCipher) -> None:
    blob = cipher.seal("students", "address", ROW, "测试路1号")
    # Cutting padding off changes the authenticated ciphertext: it fails to open.
    with pytest.raises(DecryptionError):
        cipher.open("students", "address", ROW, blob[:-17] + blob[-16:])


def test_sealing_twice_uses_fresh_nonces(cipher: FieldCipher) -> None:
    first = cipher.seal("students", "full_name", ROW, "王小明")
    second = cipher.seal("students", "full_name", ROW, "王小明")
    nonce = slice(FIELD_HEADER_BYTES, FIELD_HEADER_BYTES + NONCE_BYTES)
    assert first[nonce] != second[nonce]
    assert first != second


@pytest.mark.parametrize(
    ("table", "column", "row"),
    [
        ("users", "full_name", ROW),  # another table
        ("students", "address", ROW),  # another column of the same row
        ("students", "full_name", OTHER_ROW),  # the same column of another row
        ("students", "full_name", str(ROW).upper()),  # the row id must match exactly
    ],
    ids=["other-table", "other-column", "other-row", "row-id-spelling"],
)
def test_ciphertext_opens_only_where_it_was_sealed(
    cipher: FieldCipher, table: str, column: str, row: uuid.UUID | str
) -> None:
    blob = cipher.seal("students", "full_name", ROW, "王小明")
    with pytest.raises(DecryptionError) as caught:
        cipher.open(table, column, row, blob)
    assert "王小明" not in str(caught.value)


def test_every_flipped_byte_is_detected(cipher: FieldCipher) -> None:
    blob = cipher.seal("students", "address", ROW, "测试路1号")
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            cipher.open("students", "address", ROW, bytes(tampered))


@pytest.mark.parametrize("cut", [1, TAG_BYTES, len("测试") + TAG_BYTES + NONCE_BYTES])
def test_truncated_ciphertext_fails(cipher: FieldCipher, cut: int) -> None:
    blob = cipher.seal("students", "address", ROW, "测试")
    with pytest.raises(DecryptionError):
        cipher.open("students", "address", ROW, blob[:-cut])


def test_another_data_key_cannot_open_it(cipher: FieldCipher) -> None:
    blob = cipher.seal("students", "full_name", ROW, "王小明")
    # The same key id with other key bytes: passes the header check, fails the tag.
    impostor = FieldCipher(cipher.key_id, new_data_key())
    with pytest.raises(DecryptionError):
        impostor.open("students", "full_name", ROW, blob)
    # Another student's key: refused because the header names a different key.
    other = FieldCipher(uuid.uuid4(), new_data_key())
    with pytest.raises(DecryptionError, match="another data key"):
        other.open("students", "full_name", ROW, blob)


def test_unknown_format_or_algorithm_is_refused(cipher: FieldCipher) -> None:
    blob = cipher.seal("students", "full_name", ROW, "王小明")
    for position in (0, 1):
        changed = bytearray(blob)
        changed[position] = 0x7F
        with pytest.raises(DecryptionError, match="unknown ciphertext format"):
            cipher.open("students", "full_name", ROW, bytes(changed))
    with pytest.raises(DecryptionError):
        key_id_of(b"\x7f" + blob[1:])


def test_optional_values_stay_none(cipher: FieldCipher) -> None:
    absent = cipher.seal_optional("students", "address", ROW, None)
    assert cipher.open_optional("students", "address", ROW, absent) is None
    assert cipher.open_optional("students", "address", ROW, None) is None
    blob = cipher.seal_optional("students", "address", ROW, "测试路")
    assert blob is not None
    assert cipher.open_optional("students", "address", ROW, blob) == "测试路"


def test_data_keys_must_be_256_bits() -> None:
    with pytest.raises(ValueError):
        FieldCipher(uuid.uuid4(), os.urandom(16))


def test_wrapped_data_key_unwraps_under_its_kek_and_key_id() -> None:
    kek, key_id, data_key = os.urandom(32), uuid.uuid4(), new_data_key()
    wrapped = wrap_data_key(kek, 7, key_id, data_key)
    assert wrapped_kek_version(wrapped) == 7
    assert data_key not in wrapped
    assert unwrap_data_key(kek, key_id, wrapped) == data_key


def test_wrapped_data_key_is_bound_to_its_key_id_and_kek() -> None:
    kek, key_id, data_key = os.urandom(32), uuid.uuid4(), new_data_key()
    wrapped = wrap_data_key(kek, 1, key_id, data_key)
    with pytest.raises(DecryptionError):
        unwrap_data_key(kek, uuid.uuid4(), wrapped)  # moved to another data_keys row
    with pytest.raises(DecryptionError):
        unwrap_data_key(os.urandom(32), key_id, wrapped)  # another KEK
    relabelled = bytearray(wrapped)
    relabelled[5] ^= 0x03  # claims another KEK version: the header is authenticated
    with pytest.raises(DecryptionError):
        unwrap_data_key(kek, key_id, bytes(relabelled))
    for position in range(6, len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x80
        with pytest.raises(DecryptionError):
            unwrap_data_key(kek, key_id, bytes(tampered))


def test_blind_index_is_deterministic_and_eight_bytes() -> None:
    key = os.urandom(32)
    first = blind_index(key, "student_no", "NO00001", "school-a")
    assert first == blind_index(key, "student_no", "NO00001", "school-a")
    assert len(first) == BLIND_INDEX_BYTES == 8


def test_blind_index_depends_on_the_key() -> None:
    value = "110105201301010015"
    assert blind_index(os.urandom(32), "national_id", value) != blind_index(
        os.urandom(32), "national_id", value
    )


def test_blind_index_is_separated_by_kind_scope_and_value() -> None:
    key = os.urandom(32)
    base = blind_index(key, "student_no", "NO00001", "school-a")
    variants = {
        blind_index(key, "national_id", "NO00001", "school-a"),
        blind_index(key, "student_no", "NO00001", "school-b"),
        blind_index(key, "student_no", "NO00001"),
        blind_index(key, "student_no", "NO00002", "school-a"),
        blind_index(key, "student_no", "no00001", "school-a"),
    }
    assert base not in variants
    assert len(variants) == 5


def test_blind_index_is_not_a_plain_hash_of_the_value() -> None:
    key = os.urandom(32)
    value = "110105201301010015"
    index = blind_index(key, "national_id", value)
    for digest in (hashlib.sha256, hashlib.sha1, hashlib.md5):
        assert digest(value.encode()).digest()[:8] != index
