"""The key ring on disk: created by ``casemgr init`` with 0600 files, refused when exposed."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from casemgr.crypto import Crypto, KeyRing, KeyRingError, create_key_ring
from casemgr.crypto.keyring import read_audit_public_keys
from casemgr.settings import Settings

KEY_FILES = ["kek-0001.key", "blind-index.key", "audit-signing.key", "audit-signing.pub"]
UNSAFE_MODES = [0o640, 0o604, 0o660, 0o644, 0o606]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(keys_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(keys_dir.iterdir())}


def test_create_key_ring_writes_every_key_owner_only(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    created = create_key_ring(keys_dir)
    assert created == ["kek-0001.key", "blind-index.key", "audit-signing.key"]
    assert sorted(p.name for p in keys_dir.iterdir()) == sorted(KEY_FILES)
    for name in KEY_FILES:
        assert mode_of(keys_dir / name) == 0o600, name
    assert mode_of(keys_dir) == 0o700


def test_create_key_ring_ignores_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        create_key_ring(tmp_path / "keys")
    finally:
        os.umask(previous)
    for name in KEY_FILES:
        assert mode_of(tmp_path / "keys" / name) == 0o600, name


def test_create_key_ring_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    create_key_ring(keys_dir)
    before = snapshot(keys_dir)
    assert create_key_ring(keys_dir) == []
    assert snapshot(keys_dir) == before


def test_create_key_ring_completes_a_partial_ring(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    create_key_ring(keys_dir)
    kek = (keys_dir / "kek-0001.key").read_bytes()
    (keys_dir / "blind-index.key").unlink()
    assert create_key_ring(keys_dir) == ["blind-index.key"]
    assert (keys_dir / "kek-0001.key").read_bytes() == kek
    assert mode_of(keys_dir / "blind-index.key") == 0o600


def test_key_ring_loads_separate_keys(keys_dir: Path) -> None:
    ring = KeyRing(keys_dir)
    assert ring.current_kek_version == 1
    assert ring.kek_versions == [1]
    assert len(ring.kek(1)) == 32
    assert len(ring.blind_index_key) == 32
    assert ring.kek(1) != ring.blind_index_key
    public_pem = (keys_dir / "audit-signing.pub").read_bytes()
    public = serialization.load_pem_public_key(public_pem)
    signature = ring.audit_signing_key.sign(b"checkpoint")
    public.verify(signature, b"checkpoint")  # type: ignore[union-attr]
    # Key bytes never show in the ring's repr.
    assert ring.kek(1).hex() not in repr(ring)


def test_crypto_blind_index_uses_the_ring_key(tmp_path: Path) -> None:
    create_key_ring(tmp_path / "one")
    create_key_ring(tmp_path / "two")
    one = Crypto(KeyRing(tmp_path / "one"))
    assert one.blind_index("national_id", "x") == Crypto(KeyRing(tmp_path / "one")).blind_index(
        "national_id", "x"
    )
    assert one.blind_index("national_id", "x") != Crypto(KeyRing(tmp_path / "two")).blind_index(
        "national_id", "x"
    )


@pytest.mark.parametrize("mode", UNSAFE_MODES, ids=oct)
@pytest.mark.parametrize("name", KEY_FILES)
def test_key_ring_refuses_group_or_world_access(keys_dir: Path, name: str, mode: int) -> None:
    (keys_dir / name).chmod(mode)
    with pytest.raises(KeyRingError, match=re.escape(name)):
        KeyRing(keys_dir)
    with pytest.raises(KeyRingError, match=re.escape(name)):
        create_key_ring(keys_dir)


def test_key_ring_refuses_an_exposed_kek_added_while_running(keys_dir: Path) -> None:
    ring = KeyRing(keys_dir)
    assert ring.current_kek_version == 1
    exposed = keys_dir / "kek-0002.key"
    exposed.write_bytes((keys_dir / "kek-0001.key").read_bytes())
    exposed.chmod(0o644)
    with pytest.raises(KeyRingError, match=re.escape("kek-0002.key")):
        _ = ring.current_kek_version


def test_missing_or_incomplete_key_ring_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="casemgr init"):
        KeyRing(tmp_path / "absent")
    create_key_ring(tmp_path / "keys")
    (tmp_path / "keys" / "audit-signing.key").unlink()
    with pytest.raises(KeyRingError, match="incomplete"):
        KeyRing(tmp_path / "keys")
    (tmp_path / "keys2").mkdir(mode=0o700)
    with pytest.raises(KeyRingError, match="no key-encryption key"):
        KeyRing(tmp_path / "keys2")


def test_new_kek_version_is_owner_only_and_never_replaced(keys_dir: Path) -> None:
    ring = KeyRing(keys_dir)
    ring.add_kek_version(2)
    assert ring.current_kek_version == 2
    assert mode_of(keys_dir / "kek-0002.key") == 0o600
    kek2 = ring.kek(2)
    ring.add_kek_version(2)  # resuming a rotation must not replace the key
    assert ring.kek(2) == kek2
    assert ring.kek(1) != kek2


def _key_file(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_audit_public_keys_are_pinned_in_their_file_never_derived(keys_dir: Path) -> None:
    ring = KeyRing(keys_dir)
    [pinned] = ring.audit_public_keys
    assert _public_raw(pinned) == _public_raw(ring.audit_signing_key.public_key())
    # Someone replaces the private key: the ring signs with it, but trusts it no more.
    planted = Ed25519PrivateKey.generate()
    _key_file(
        keys_dir / "audit-signing.key",
        planted.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    assert _public_raw(ring.audit_signing_key.public_key()) == _public_raw(planted.public_key())
    assert [_public_raw(k) for k in ring.audit_public_keys] == [_public_raw(pinned)]


def test_audit_public_key_file_holds_one_pem_block_per_key(keys_dir: Path) -> None:
    ring = KeyRing(keys_dir)
    successor = Ed25519PrivateKey.generate().public_key()
    assert ring.pin_audit_public_key(successor) is True
    pub = keys_dir / "audit-signing.pub"
    text = pub.read_text()
    assert text.count("-----BEGIN PUBLIC KEY-----") == 2
    assert mode_of(pub) == 0o600
    assert [_public_raw(k) for k in read_audit_public_keys(pub)][1] == _public_raw(successor)
    assert ring.pin_audit_public_key(successor) is False  # idempotent, for resumption
    assert pub.read_text() == text
    assert sorted(p.name for p in keys_dir.iterdir()) == sorted(KEY_FILES)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"", "holds no audit public key"),
        (b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n", "unreadable"),
        (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "not Ed25519",
        ),
    ],
    ids=["empty", "garbled", "not-ed25519"],
)
def test_unusable_audit_public_key_file_is_refused(
    tmp_path: Path, content: bytes, complaint: str
) -> None:
    path = tmp_path / "audit-signing.pub"
    path.write_bytes(content)
    with pytest.raises(KeyRingError, match=complaint):
        read_audit_public_keys(path)
    with pytest.raises(KeyRingError, match="cannot read"):
        read_audit_public_keys(tmp_path / "absent.pub")


def test_init_never_pins_a_new_audit_key_over_a_lost_one(keys_dir: Path) -> None:
    pub = (keys_dir / "audit-signing.pub").read_bytes()
    (keys_dir / "audit-signing.key").unlink()
    with pytest.raises(KeyRingError, match="restore the private key"):
        create_key_ring(keys_dir)
    assert (keys_dir / "audit-signing.pub").read_bytes() == pub
    assert not (keys_dir / "audit-signing.key").exists()


def test_key_ring_needs_its_audit_public_key_file(keys_dir: Path) -> None:
    (keys_dir / "audit-signing.pub").unlink()
    with pytest.raises(KeyRingError, match=re.escape("no audit-signing.pub")):
        KeyRing(keys_dir)


def test_missing_kek_version_is_a_key_ring_error(keys_dir: Path) -> None:
    with pytest.raises(KeyRingError, match="version 9"):
        KeyRing(keys_dir).kek(9)


def test_create_app_refuses_to_start_with_an_exposed_key(keys_dir: Path, tmp_path: Path) -> None:
    from casemgr.app import create_app

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'never-opened.db'}",
        keys_dir=keys_dir,
        var_dir=tmp_path / "var",
        checkpoint_file=tmp_path / "var" / "audit-checkpoints.jsonl",
    )
    (keys_dir / "audit-signing.key").chmod(0o640)
    with pytest.raises(KeyRingError, match=re.escape("audit-signing.key")):
        create_app(settings)


def cli_env(database_url: str, keys_dir: Path, var_dir: Path) -> dict[str, str]:
    return {
        "CASEMGR_DATABASE_URL": database_url,
        "CASEMGR_KEYS_DIR": str(keys_dir),
        "CASEMGR_VAR_DIR": str(var_dir),
    }


def test_cli_init_creates_the_ring_and_is_idempotent(database_url: str, tmp_path: Path) -> None:
    from casemgr.cli import main

    keys_dir = tmp_path / "fresh-keys"
    env = cli_env(database_url, keys_dir, tmp_path / "var")
    first = CliRunner().invoke(main, ["init"], env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.splitlines()[-1]) == {
        "keys_created": ["kek-0001.key", "blind-index.key", "audit-signing.key"],
        "migrated": True,
    }
    for name in KEY_FILES:
        assert mode_of(keys_dir / name) == 0o600, name
    before = snapshot(keys_dir)
    second = CliRunner().invoke(main, ["init"], env=env)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout.splitlines()[-1]) == {"keys_created": [], "migrated": True}
    assert snapshot(keys_dir) == before


@pytest.mark.parametrize(
    ("command", "name", "mode"),
    [
        (["init"], "kek-0001.key", 0o640),
        (["keys", "status"], "blind-index.key", 0o604),
        (["keys", "rotate"], "audit-signing.key", 0o660),
    ],
    ids=["init-group-readable", "status-world-readable", "rotate-group-writable"],
)
def test_cli_refuses_exposed_key_files(
    database_url: str,
    keys_dir: Path,
    tmp_path: Path,
    command: list[str],
    name: str,
    mode: int,
) -> None:
    from casemgr.cli import main

    (keys_dir / name).chmod(mode)
    before = snapshot(keys_dir)
    result = CliRunner().invoke(main, command, env=cli_env(database_url, keys_dir, tmp_path / "v"))
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # a clean refusal, not a crash
    assert "Traceback" not in result.output
    message = result.stderr.replace("\n", "")  # rich wraps long lines
    assert name in message
    assert "chmod 600" in message
    assert result.stdout == ""
    assert snapshot(keys_dir) == before  # nothing created, nothing rotated
