"""The key ring: key files on disk, outside the database.

Layout (``keys/``): ``kek-NNNN.key`` (versioned key-encryption keys, the highest is current),
``blind-index.key`` (HMAC key for blind indexes, version 1) and ``blind-index-NNNN.key``
(later versions, after ``keys rotate --blind-index``), ``audit-signing.key`` (the Ed25519
private key that signs audit checkpoints) and ``audit-signing.pub`` (the audit public keys
verification trusts: PEM blocks, the original first, one appended by each ``keys rotate
--audit-signing``; never derived from the private key). While that rotation runs,
``audit-signing.next.key`` holds the successor and ``audit-signing.retired.key`` the
predecessor until it is destroyed. Every file is 0600 and the ring refuses to load when
any of them is readable by group or others.
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
AUDIT_NEXT_FILE = "audit-signing.next.key"
AUDIT_RETIRED_FILE = "audit-signing.retired.key"


class KeyRingError(RuntimeError):
    """The key ring is missing, incomplete or unsafely stored."""


def _kek_name(version: int) -> str:
    return f"kek-{version:04d}.key"


def write_secret_file(path: Path, data: bytes) -> None:
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        write_secret_file(keys_dir / _kek_name(1), _encode_key(secrets.token_bytes(KEY_BYTES)))
        created.append(_kek_name(1))
    if not (keys_dir / BLIND_INDEX_FILE).exists():
        write_secret_file(keys_dir / BLIND_INDEX_FILE, _encode_key(secrets.token_bytes(KEY_BYTES)))
        created.append(BLIND_INDEX_FILE)
    if not (keys_dir / AUDIT_SIGNING_FILE).exists():
        if (keys_dir / AUDIT_PUBLIC_FILE).exists():
            # A new pair would silently re-pin the trust that auditors hold a copy of.
            raise KeyRingError(
                f"{AUDIT_SIGNING_FILE} is missing but {AUDIT_PUBLIC_FILE} pins audit keys:"
                " restore the private key from its backup"
            )
        private = Ed25519PrivateKey.generate()
        write_secret_file(keys_dir / AUDIT_SIGNING_FILE, _private_pem(private))
        write_secret_file(keys_dir / AUDIT_PUBLIC_FILE, _public_pem(private.public_key()))
        created.append(AUDIT_SIGNING_FILE)
    return created


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----\s.*?-----END PUBLIC KEY-----", re.DOTALL)


def read_audit_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Every audit public key in a public-key file (PEM blocks, oldest first)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyRingError(f"cannot read the audit public key file {path}: {exc.strerror}") from exc
    keys = []
    for block in _PEM_BLOCK.findall(data):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise KeyRingError(f"{path} holds an unreadable public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyRingError(f"{path} holds a public key that is not Ed25519")
        keys.append(key)
    if not keys:
        raise KeyRingError(f"{path} holds no audit public key (PEM block)")
    return keys


def _load_audit_private(path: Path) -> Ed25519PrivateKey:
    try:
        pem = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyRingError(f"incomplete key ring in {path.parent}: {exc.filename}") from exc
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise KeyRingError(f"{path.name} does not hold a readable private key") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyRingError(f"{path.name} is not an Ed25519 private key")
    return private


def _file_identity(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


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
        self._audit_signing: tuple[tuple[int, int, int], Ed25519PrivateKey] | None = None
        _ = self.audit_signing_key
        if not self.audit_public_key_file.exists():
            raise KeyRingError(f"incomplete key ring in {keys_dir}: no {AUDIT_PUBLIC_FILE}")

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
            write_secret_file(path, _encode_key(secrets.token_bytes(KEY_BYTES)))
        self._dir_mtime_ns = -1
        self._refresh()

    def destroy_file(self, path: Path) -> None:
        """Overwrite a key file with zeros, then delete it (best effort on the media)."""
        if path.parent.resolve() != self.keys_dir.resolve():
            raise KeyRingError(f"{path} is not in the key ring")
        size = path.stat().st_size
        with path.open("r+b") as handle:
            handle.write(bytes(size))
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()
        self._dir_mtime_ns = -1
        self._refresh()

    @property
    def audit_signing_key(self) -> Ed25519PrivateKey:
        """The key that signs checkpoints now (re-read after ``keys rotate --audit-signing``)."""
        path = self.keys_dir / AUDIT_SIGNING_FILE
        try:
            identity = _file_identity(path)
        except FileNotFoundError as exc:
            raise KeyRingError(f"incomplete key ring in {self.keys_dir}: {path}") from exc
        loaded = self._audit_signing
        if loaded is None or loaded[0] != identity:
            loaded = (identity, _load_audit_private(path))
            self._audit_signing = loaded
        return loaded[1]

    @property
    def audit_public_key_file(self) -> Path:
        return self.keys_dir / AUDIT_PUBLIC_FILE

    @property
    def audit_public_keys(self) -> list[Ed25519PublicKey]:
        """The pinned audit public keys: what verification trusts, read from the file."""
        return read_audit_public_keys(self.audit_public_key_file)

    def next_audit_signing_key(self, *, create: bool) -> Ed25519PrivateKey | None:
        """The successor key of an audit-signing rotation under way (created if asked)."""
        path = self.keys_dir / AUDIT_NEXT_FILE
        if not path.exists():
            if not create:
                return None
            write_secret_file(path, _private_pem(Ed25519PrivateKey.generate()))
        return _load_audit_private(path)

    def pin_audit_public_key(self, public: Ed25519PublicKey) -> bool:
        """Append ``public`` to the public-key file unless it is there; True if appended."""
        path = self.audit_public_key_file
        wanted = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for key in read_audit_public_keys(path):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if raw == wanted:
                return False
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            data += b"\n"
        # Written beside it and renamed over it: a crash leaves the old file or the new one.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        write_secret_file(tmp, data + _public_pem(public))
        os.replace(tmp, path)
        _fsync_dir(self.keys_dir)
        return True

    def promote_next_audit_signing_key(self) -> None:
        """Make the successor the signing key; the predecessor waits as the retired file.

        Each step is a link or a rename, so ``audit-signing.key`` always holds a whole key
        and a crash between the steps is resumed by calling this again.
        """
        current = self.keys_dir / AUDIT_SIGNING_FILE
        following = self.keys_dir / AUDIT_NEXT_FILE
        retired = self.keys_dir / AUDIT_RETIRED_FILE
        if not following.exists():
            return
        if not retired.exists():
            os.link(current, retired)
        os.replace(following, current)
        _fsync_dir(self.keys_dir)
        self._audit_signing = None

    def destroy_retired_audit_signing_key(self) -> bool:
        """Destroy the predecessor's private key, if a rotation left it; True if it did."""
        retired = self.keys_dir / AUDIT_RETIRED_FILE
        if not retired.exists():
            return False
        if (self.keys_dir / AUDIT_NEXT_FILE).exists():
            raise KeyRingError("the audit-signing rotation has not promoted its successor yet")
        self.destroy_file(retired)
        return True

    def kek_path(self, version: int) -> Path:
        return self.keys_dir / _kek_name(version)

    def add_kek_version(self, version: int) -> None:
        """Create KEK ``version`` unless its file exists already (idempotent for resumption)."""
        path = self.kek_path(version)
        if not path.exists():
            write_secret_file(path, _encode_key(secrets.token_bytes(KEY_BYTES)))
        self._dir_mtime_ns = -1
        self._refresh()

    def __repr__(self) -> str:
        return f"KeyRing(keys_dir={str(self.keys_dir)!r}, kek_versions={sorted(self._keks)})"
