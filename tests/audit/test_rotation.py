"""Rotating the audit-signing key (``casemgr keys rotate --audit-signing``): the old key hands
over in a signed record, its private key is destroyed, old checkpoints keep verifying, an
auditor holding only the original public key follows every rotation, and a rerun after a
crash at any step finishes the job."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casemgr import audit
from casemgr.audit.anchors import read_anchor_file
from casemgr.audit.chain import Checkpoint, KeyTransition, key_id, sign_checkpoint
from casemgr.audit.rotation import rotate_audit_signing_key
from casemgr.crypto.keyring import KeyRing, read_audit_public_keys
from casemgr.settings import Settings
from tests.audit.helpers import (
    N,
    append_events,
    build_chain,
    checkpoint,
    cli,
    cli_verify,
    events,
    put_checkpoint_row,
    seal,
    verify,
)
from tests.audit.receivers import http_receiver

KEY_FILES = ["audit-signing.key", "audit-signing.pub", "blind-index.key", "kek-0001.key"]


class SimulatedCrash(Exception):
    pass


def rotate(settings: Settings) -> dict[str, Any]:
    result = cli(settings, "keys", "rotate", "--audit-signing")
    assert result.exit_code == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def pinned_ids(settings: Settings) -> list[str]:
    return [key_id(key) for key in read_audit_public_keys(settings.keys_dir / "audit-signing.pub")]


def signed_by(settings: Settings) -> list[tuple[int, str]]:
    return [(cp.seq, cp.key_id) for cp in read_anchor_file(settings.checkpoint_file).checkpoints]


def transitions(settings: Settings) -> list[KeyTransition]:
    return read_anchor_file(settings.checkpoint_file).transitions


def key_files(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.keys_dir.iterdir() if not p.name.startswith("."))


def current_key_id(settings: Settings) -> str:
    return key_id(KeyRing(settings.keys_dir).audit_signing_key.public_key())


def rotation_events(db: Any) -> list[dict[str, Any]]:
    return [e for e in events(db) if e["action"] == "keys:rotate"]


@pytest.fixture
def auditors_copy(settings: Settings, tmp_path: Path) -> Path:
    """The original public key, as an auditor keeps it, away from the key ring."""
    copy = tmp_path / "auditor" / "audit-signing.pub"
    copy.parent.mkdir()
    shutil.copyfile(settings.keys_dir / "audit-signing.pub", copy)
    return copy


def test_rotation_hands_over_and_every_checkpoint_keeps_verifying(
    db: Any, settings: Settings, auditors_copy: Path
) -> None:
    original = current_key_id(settings)
    build_chain(db, settings, checkpoints_at=(5,))  # 6-15 not sealed yet
    with http_receiver() as anchor:
        settings = dataclasses.replace(settings, audit_anchor_url=anchor.url)
        answer = rotate(settings)
        lines = settings.checkpoint_file.read_text().splitlines()
        assert [body.rstrip("\n") for body in anchor.received(len(lines))] == lines

    new = answer["audit_signing_key_id"]
    assert answer == {
        "audit_signing_key_id": new,
        "previous_key_id": original,
        "resumed": False,
        "checkpoint_seq": N + 1,
    }
    assert new != original == answer["previous_key_id"]
    # The old key sealed what it saw and handed over there; the new key sealed the rotation.
    assert signed_by(settings) == [(5, original), (N, original), (N + 1, new)]
    [handover] = transitions(settings)
    assert (handover.from_key_id, handover.to_key_id, handover.seq) == (original, new, N)
    assert pinned_ids(settings) == [original, new]
    assert current_key_id(settings) == new

    # The old private key is gone; every key file is the owner's alone.
    assert key_files(settings) == KEY_FILES
    assert stat.S_IMODE(settings.keys_dir.stat().st_mode) == 0o700
    for name in KEY_FILES:
        assert stat.S_IMODE((settings.keys_dir / name).stat().st_mode) == 0o600, name

    [event] = rotation_events(db)
    assert (event["seq"], event["resource_id"]) == (N + 1, f"audit-signing:{new}")
    assert json.loads(event["detail"]) == {
        "kind": "audit-signing",
        "from": original,
        "to": new,
        "resumed": False,
    }
    assert handover.to_public.hex() not in event["detail"]

    assert verify(db, settings).ok
    assert verify(db, settings, public_key_file=auditors_copy).ok


CRASH_POINTS = {
    "successor-created": "casemgr.crypto.keyring.KeyRing.pin_audit_public_key",
    "public-key-pinned": "casemgr.audit.rotation._hand_over",
    "handed-over": "casemgr.crypto.keyring.KeyRing.promote_next_audit_signing_key",
    "promoted": "casemgr.crypto.keyring.KeyRing.destroy_retired_audit_signing_key",
    "old-key-destroyed": "casemgr.audit.rotation.record",
    "rotation-recorded": "casemgr.audit.rotation.seal",
}


@pytest.mark.parametrize("crash_after", list(CRASH_POINTS))
def test_rotation_resumes_after_a_crash_between_steps(
    db: Any,
    settings: Settings,
    auditors_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    crash_after: str,
) -> None:
    original = current_key_id(settings)
    build_chain(db, settings, checkpoints_at=(5,))

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise SimulatedCrash(crash_after)

    async def rotation(sessions: Any) -> Any:
        return await rotate_audit_signing_key(sessions, KeyRing(settings.keys_dir), settings)

    # A crash is the process dying: no command-line wrapper gets to seal afterwards.
    with monkeypatch.context() as patched:
        patched.setattr(CRASH_POINTS[crash_after], crash)
        with pytest.raises(SimulatedCrash):
            db.run(rotation)

    # Half done, the trail still verifies, for the operator and for the auditor alike.
    assert verify(db, settings).ok
    assert verify(db, settings, public_key_file=auditors_copy).ok
    successor = settings.keys_dir / "audit-signing.next.key"
    if successor.exists():
        key = serialization.load_pem_private_key(successor.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        new = key_id(key.public_key())
    else:
        new = current_key_id(settings)
    assert new != original

    answer = rotate(settings)
    assert answer["resumed"] is True
    assert (answer["previous_key_id"], answer["audit_signing_key_id"]) == (original, new)
    assert [(t.from_key_id, t.to_key_id) for t in transitions(settings)] == [(original, new)]
    assert pinned_ids(settings) == [original, new]
    assert current_key_id(settings) == new
    assert key_files(settings) == KEY_FILES
    assert [e["resource_id"] for e in rotation_events(db)] == [f"audit-signing:{new}"]
    assert signed_by(settings)[-1][1] == new
    assert verify(db, settings).ok
    assert verify(db, settings, public_key_file=auditors_copy).ok


def test_auditor_with_only_the_original_key_follows_two_rotations(
    db: Any, settings: Settings, auditors_copy: Path
) -> None:
    original = current_key_id(settings)
    append_events(db, 3)
    checkpoint(db, settings)
    first = rotate(settings)["audit_signing_key_id"]
    append_events(db, 3)
    second = rotate(settings)["audit_signing_key_id"]
    append_events(db, 2)
    checkpoint(db, settings)

    assert pinned_ids(settings) == [original, first, second]
    assert [(t.from_key_id, t.to_key_id) for t in transitions(settings)] == [
        (original, first),
        (first, second),
    ]
    assert {key for _, key in signed_by(settings)} == {original, first, second}
    assert [key_id(key) for key in read_audit_public_keys(auditors_copy)] == [original]
    result = verify(db, settings, public_key_file=auditors_copy)
    assert (result.ok, result.checked) == (True, len(events(db)))
    code, line = cli_verify(settings, "--public-key", str(auditors_copy))
    assert (code, line["ok"]) == (0, True)


def test_a_leaked_retired_key_cannot_vouch_after_its_hand_over(db: Any, settings: Settings) -> None:
    pem = (settings.keys_dir / "audit-signing.key").read_bytes()  # a copy that leaked
    leaked = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(leaked, Ed25519PrivateKey)
    build_chain(db, settings, checkpoints_at=(5,))
    rotate(settings)  # hands over at 15; the new key seals 16
    append_events(db, 2)

    # The honest signer refuses a key that has handed over...
    async def sign_with_leaked(sessions: Any) -> Any:
        return await audit.write_checkpoint(
            sessions,
            leaked,
            read_audit_public_keys(settings.keys_dir / "audit-signing.pub"),
            settings.checkpoint_file,
            seal_deadline=settings.seal_deadline,
        )

    with pytest.raises(audit.CheckpointRefused, match="has handed over"):
        db.run(sign_with_leaked)

    # ...and a checkpoint its holder signs anyway, in both copies, vouches for nothing.
    tip = events(db)[-1]
    at = tip["at"]
    forged = Checkpoint(
        N + 3, tip["hash"], at, key_id(leaked.public_key()),
        sign_checkpoint(leaked, N + 3, tip["hash"], at),
    )  # fmt: skip
    db.in_transaction(lambda session: put_checkpoint_row(session, forged))
    with settings.checkpoint_file.open("a", encoding="utf-8") as handle:
        handle.write(forged.to_json_line())
    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, N + 2)
    assert f"which handed over at {N}" in (result.reason or "")


def test_a_forged_key_transition_introduces_nobody(db: Any, settings: Settings) -> None:
    """An intruder who can append to the file claims the genuine key handed over to theirs,
    then signs a rebuilt tail with it. Only the genuine key could sign that hand-over."""
    genuine = current_key_id(settings)
    build_chain(db, settings, checkpoints_at=(5,))
    own = Ed25519PrivateKey.generate()
    five = events(db)[4]
    claimed = KeyTransition.sign(own, own.public_key(), 5, five["hash"], five["at"])
    forged = dataclasses.replace(claimed, from_key_id=genuine)
    tip = events(db)[-1]
    cp = Checkpoint(
        N, tip["hash"], tip["at"], key_id(own.public_key()),
        sign_checkpoint(own, N, tip["hash"], tip["at"]),
    )  # fmt: skip
    with settings.checkpoint_file.open("a", encoding="utf-8") as handle:
        handle.write(forged.to_json_line() + cp.to_json_line())
    db.in_transaction(lambda session: put_checkpoint_row(session, cp))

    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, 6)
    assert "key transition at 5 is not signed by a trusted key" in (result.reason or "")
    append_events(db, 1)
    with pytest.raises(audit.CheckpointRefused, match="not signed by a trusted key"):
        seal(db, settings)


def test_a_running_service_signs_with_the_new_key_after_rotation(
    db: Any, settings: Settings
) -> None:
    ring = db.keyring  # loaded before the rotation, as a running service's is
    before = key_id(ring.audit_signing_key.public_key())
    append_events(db, 2)
    checkpoint(db, settings)
    new = rotate(settings)["audit_signing_key_id"]
    assert key_id(ring.audit_signing_key.public_key()) == new != before
    append_events(db, 1)
    written = seal(db, settings, ring)
    assert written is not None and written.key_id == new
    assert verify(db, settings).ok
