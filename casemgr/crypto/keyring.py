"""The key ring: key files on disk, outside the database.

Layout (``keys/``): ``kek-NNNN.key`` (versioned key-encryption keys, the highest is current),
``blind-index.key`` (HMAC key for blind indexes, version 1) and ``blind-index-NNNN.key``
(later versions, after ``keys rotate --blind-index``), ``audit-signing.key`` and
``audit-signing.pub`` (Ed25519 pair that signs audit checkpoints). Every file is 0600 and
the ring refuses to load when any of them is readable by group or others.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import stat
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_BYTES = 32
KEK_PATTERN = re.compile(r"^kek-(\d{4,})\.key$")
BLIND_INDEX_FILE = "blind-index.key"
BLIND_INDEX_PATTERN = re.compile(r"^blind-index-(\d{4,})\.key$")
AUDIT_SIGNING_FILE = "audit-signing.key"
AUDIT_PUBLIC_FILE = "audit-signing.pub"


class KeyRingError(RuntimeError):
    """The key ring is missing, incomplete or unsafely stored."""


def _kek_name(version: int) -> str:
    return f"kek-{version:04d}.key"


def _write_secret_file(path: Path, data: bytes) -> None:
    """Write a new file with mode 0600, atomically and never over an existing one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.link(tmp, path)  # fails if the target exists: a key is never overwritten
    finally:
        tmp.unlink(missing_ok=True)


def _encode_key(raw: bytes) -> bytes:
    return base64.b64encode(raw) + b"\n"


def _decode_key(path: Path) -> bytes:
    raw = base64.b64decode(path.read_bytes().strip(), validate=True)
    if len(raw) != KEY_BYTES:
        raise KeyRingError(f"{path.name} does not hold a {KEY_BYTES}-byte key")
    return raw


def check_permissions(keys_dir: Path) -> None:
    """Refuse key files that group or others could read (or write)."""
    for path in sorted(keys_dir.iterdir()):
        if path.name in ("README.md", ".gitignore") or path.name.startswith("."):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyRingError(
                f"key file {path} has mode {mode:04o}; it must be readable by its owner only"
                f" (chmod 600 {path})"
            )


def create_key_ring(keys_dir: Path) -> list[str]:
    """Create whatever part of the key ring is missing; return the names created."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_permissions(keys_dir)
    created: list[str] = []
    if not _kek_versions(keys_dir):
        _write_secret_file(keys_dir / _kek_name(1), _encode_key(secrets.token_bytes(KEY_BYTES)))
        created.append(_kek_name(1))
    if not (keys_dir / BLIND_INDEX_FILE).exists():
        _write_secret_file(keys_dir / BLIND_INDEX_FILE, _encode_key(secrets.token_bytes(KEY_BYTES)))
        created.append(BLIND_INDEX_FILE)
    if not (keys_dir / AUDIT_SIGNING_FILE).exists():
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (keys_dir / AUDIT_PUBLIC_FILE).unlink(missing_ok=True)
        _write_secret_file(keys_dir / AUDIT_SIGNING_FILE, pem)
        _write_secret_file(keys_dir / AUDIT_PUBLIC_FILE, public)
        created.append(AUDIT_SIGNING_FILE)
    return created


def blind_index_name(version: int) -> str:
    return BLIND_INDEX_FILE if version == 1 else f"blind-index-{version:04d}.key"


def _blind_index_versions(keys_dir: Path) -> list[int]:
    versions = [1] if (keys_dir / BLIND_INDEX_FILE).exists() else []
    for path in keys_dir.iterdir():
        match = BLIND_INDEX_PATTERN.match(path.name)
        if match:
            versions.append(int(match.group(1)))
    return sorted(versions)


def _kek_versions(keys_dir: Path) -> list[int]:
    versions = []
    for path in keys_dir.iterdir():
        match = KEK_PATTERN.match(path.name)
        if match:
            versions.append(int(match.group(1)))
    return sorted(versions)


class KeyRing:
    """Key material loaded from the keys directory.

    KEK versions are re-read from disk when a version is asked for that is not loaded yet
    or the directory changed, so a running service picks up a rotation made by the CLI.
    """

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        if not keys_dir.is_dir():
            raise KeyRingError(f"no key ring at {keys_dir}: run 'casemgr init' first")
        check_permissions(keys_dir)
        self._lock = threading.Lock()
        self._keks: dict[int, bytes] = {}
        self._blind_index_keys: dict[int, bytes] = {}
        self._dir_mtime_ns = -1
        self._refresh()
        if not self._keks:
            raise KeyRingError(f"no key-encryption key in {keys_dir}: run 'casemgr init' first")
        if not self._blind_index_keys:
            raise KeyRingError(f"incomplete key ring in {keys_dir}: no {BLIND_INDEX_FILE}")
        try:
            pem = (keys_dir / AUDIT_SIGNING_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise KeyRingError(f"incomplete key ring in {keys_dir}: {exc.filename}") from exc
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyRingError(f"{AUDIT_SIGNING_FILE} is not an Ed25519 private key")
        self.audit_signing_key: Ed25519PrivateKey = private
        self.audit_public_key: Ed25519PublicKey = private.public_key()

    def _refresh(self) -> None:
        mtime = self.keys_dir.stat().st_mtime_ns
        if mtime == self._dir_mtime_ns:
            return
        with self._lock:
            check_permissions(self.keys_dir)
            keks = {}
            for version in _kek_versions(self.keys_dir):
                keks[version] = _decode_key(self.keys_dir / _kek_name(version))
            self._keks = keks
            self._blind_index_keys = {
                version: _decode_key(self.keys_dir / blind_index_name(version))
                for version in _blind_index_versions(self.keys_dir)
            }
            self._dir_mtime_ns = mtime

    @property
    def current_kek_version(self) -> int:
        self._refresh()
        return max(self._keks)

    @property
    def kek_versions(self) -> list[int]:
        self._refresh()
        return sorted(self._keks)

    def kek(self, version: int) -> bytes:
        if version not in self._keks:
            self._refresh()
        try:
            return self._keks[version]
        except KeyError:
            raise KeyRingError(
                f"key-encryption key version {version} is not in the key ring"
            ) from None

    @property
    def blind_index_version(self) -> int:
        self._refresh()
        return max(self._blind_index_keys)

    @property
    def blind_index_key(self) -> bytes:
        """The current blind-index key: new rows are indexed with it."""
        self._refresh()
        return self._blind_index_keys[max(self._blind_index_keys)]

    @property
    def blind_index_keys(self) -> dict[int, bytes]:
        """Every blind-index key version present (two while a rotation is under way)."""
        self._refresh()
        return dict(self._blind_index_keys)

    def add_blind_index_version(self, version: int) -> None:
        """Create blind-index key ``version`` unless it exists (idempotent for resumption)."""
        path = self.keys_dir / blind_index_name(version)
        if not path.exists():
            _write_secret_file(path, _encode_key(secrets.token_bytes(KEY_BYTES)))
        self._dir_mtime_ns = -1
        self._refresh()

    def kek_path(self, version: int) -> Path:
        return self.keys_dir / _kek_name(version)

    def add_kek_version(self, version: int) -> None:
        """Create KEK ``version`` unless its file exists already (idempotent for resumption)."""
        path = self.kek_path(version)
        if not path.exists():
            _write_secret_file(path, _encode_key(secrets.token_bytes(KEY_BYTES)))
        self._dir_mtime_ns = -1
        self._refresh()

    def __repr__(self) -> str:
        return f"KeyRing(keys_dir={str(self.keys_dir)!r}, kek_versions={sorted(self._keks)})"
