"""The five ways a security review defeated ``casemgr audit verify`` offline (a database copy
with its triggers dropped), each reproduced and now failing: verification trusts neither the
database's anchors nor a key taken from the private key, compares the database with the
checkpoint file, fails on events left unsealed past the deadline, and the signer refuses to
seal a chain that does not extend its last trusted checkpoint (SPEC P4)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import audit, clock
from casemgr.audit.chain import Checkpoint, key_id, sign_checkpoint
from casemgr.settings import Settings
from tests.audit.helpers import (
    EVENTS,
    N,
    append_events,
    assert_detected,
    build_chain,
    checkpoint,
    checkpoint_rows,
    cli,
    cli_verify,
    delete_checkpoint_rows,
    events,
    file_checkpoints,
    intrude,
    put_checkpoint_row,
    rebuild_from,
    seal,
    set_event,
    set_head,
    verify,
)


@pytest.fixture
def t0() -> datetime:
    """Time stands still from here, so tests decide when events grow old."""
    at = datetime.now(UTC)
    clock.freeze(at)
    return at


def past_the_deadline(settings: Settings, t0: datetime) -> None:
    clock.freeze(t0 + settings.seal_deadline + timedelta(seconds=1))


def said(result: Any) -> str:
    """A command's stderr as one line (rich wraps long messages)."""
    return " ".join(result.stderr.split())


def sealed_state(db: Any, settings: Settings) -> tuple[list[int], bytes]:
    return checkpoint_rows(db), settings.checkpoint_file.read_bytes()


# 1 -------------------------------------------------------------------------------------


def test_attack_1_rebuilt_chain_without_any_anchor_fails_once_its_events_are_due(
    db: Any, settings: Settings, t0: datetime
) -> None:
    """Recompute the hashes, delete both the checkpoint rows and the checkpoint file. Nothing
    left contradicts the chain; its age gives it away: events older than the seal deadline
    that no checkpoint covers. And the signer will not adopt such a chain on its own."""
    build_chain(db, settings, checkpoints_at=(5, 10))
    rebuild_from(db, 3, outcome="deny")
    intrude(db, delete_checkpoint_rows)
    settings.checkpoint_file.unlink()
    past_the_deadline(settings, t0)

    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "older than the seal deadline (600 s)" in (result.reason or "")
    assert_detected(db, settings, 1)

    refused = cli(settings, "audit", "checkpoint")
    assert refused.exit_code == 1
    assert "nothing anchors the chain" in said(refused)
    assert refused.stdout == ""
    assert checkpoint_rows(db) == []
    assert not settings.checkpoint_file.exists()


def test_adopting_an_unanchored_chain_is_explicit_and_audited(
    db: Any, settings: Settings, t0: datetime
) -> None:
    """The way out for an operator whose checkpoints were genuinely lost: a deliberate
    command, whose own event says so inside the chain it seals."""
    append_events(db, 4)
    past_the_deadline(settings, t0)
    assert verify(db, settings).first_bad_seq == 1

    adopted = cli(settings, "audit", "checkpoint", "--adopt-unanchored")
    assert adopted.exit_code == 0, adopted.stderr
    assert adopted.stdout.strip().splitlines()[-1] == '{"seq":5}'
    last = events(db)[-1]
    assert (last["seq"], last["action"], last["detail"]) == (
        5,
        "audit:checkpoint",
        '{"adopted_unanchored":true}',
    )
    assert verify(db, settings).ok


# 2 -------------------------------------------------------------------------------------


def cut_after(db: Any, seq: int) -> None:
    """Delete every event after ``seq``, the checkpoint rows over them, and move the head."""
    kept = events(db)[seq - 1]

    async def tamper(session: AsyncSession) -> None:
        await session.execute(delete(EVENTS).where(EVENTS.c.seq > seq))
        await set_head(session, seq, kept["hash"])
        await delete_checkpoint_rows(session, above=seq)

    intrude(db, tamper)


def test_attack_2_tail_a_command_appended_is_sealed_so_cutting_it_fails(
    db: Any, settings: Settings
) -> None:
    """Delete the events after the last checkpoint and move the head back. The command line
    now seals whatever a command appended before it returns (here with the service's
    unsealed events 11-15), so the tail it leaves is sealed at once: cutting it, the newest
    checkpoint row included, fails at the first event cut."""
    build_chain(db, settings, checkpoints_at=(10,))
    added = cli(settings, "school", "add", "--name", "一中", "--code", "S-1")
    assert added.exit_code == 0, added.stderr
    assert checkpoint_rows(db) == file_checkpoints(settings) == [10, N + 1]

    cut_after(db, 10)
    assert checkpoint_rows(db) == [10]
    assert_detected(db, settings, 11)
    assert "events after 10 are missing" in (verify(db, settings).reason or "")


def test_attack_2_service_seals_on_shutdown_so_cutting_its_tail_fails(
    db: Any, settings: Settings
) -> None:
    """The service seals every interval and once more on shutdown, leaving nothing of its
    own unsealed: the same cut then fails."""
    from litestar.testing import TestClient

    from casemgr.app import create_app

    build_chain(db, settings, checkpoints_at=(10,))
    app = create_app(dataclasses.replace(settings, checkpoint_interval_seconds=3600))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
    assert checkpoint_rows(db) == [10, N]

    cut_after(db, 12)
    assert_detected(db, settings, 13)


# 3 -------------------------------------------------------------------------------------


def _drop_last_file_line(settings: Settings) -> None:
    lines = settings.checkpoint_file.read_text().splitlines(keepends=True)
    settings.checkpoint_file.write_text("".join(lines[:-1]))


@pytest.mark.parametrize(
    ("damage", "first_bad_seq", "reason"),
    [
        ("file-deleted", 1, "is missing, but the database holds 3 checkpoints"),
        ("file-cut-short", 11, "checkpoint at 15 is in the database but not in the checkpoint"),
        ("rows-deleted", 6, "checkpoint at 10 is in the checkpoint file but not in the database"),
        ("row-replaced", 11, "checkpoint at 15 differs between the database and the file"),
    ],
)
def test_attack_3_database_and_checkpoint_file_must_agree(
    db: Any, settings: Settings, damage: str, first_bad_seq: int, reason: str
) -> None:
    """Deleting the checkpoint file alone used to pass without a warning. Now a file that is
    missing or short of the database, rows the database lost, and rows that differ from the
    file each fail, and the signer refuses to extend either copy until they agree."""
    build_chain(db, settings, checkpoints_at=(5, 10, N))
    if damage == "file-deleted":
        settings.checkpoint_file.unlink()
    elif damage == "file-cut-short":
        _drop_last_file_line(settings)
    elif damage == "rows-deleted":
        intrude(db, lambda session: delete_checkpoint_rows(session, above=5))
    else:
        # An intruder who can read the signing key signs a different statement at 15.
        tip = events(db)[-1]
        at = clock.now() + timedelta(seconds=7)
        other = Checkpoint(
            N, tip["hash"], at, key_id(db.keyring.audit_signing_key.public_key()),
            sign_checkpoint(db.keyring.audit_signing_key, N, tip["hash"], at),
        )  # fmt: skip

        async def replace(session: AsyncSession) -> None:
            await delete_checkpoint_rows(session, above=10)
            await put_checkpoint_row(session, other)

        intrude(db, replace)

    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, first_bad_seq)
    assert reason in (result.reason or "")
    assert_detected(db, settings, first_bad_seq)

    append_events(db, 1)
    before = checkpoint_rows(db), file_checkpoints(settings)
    refused = cli(settings, "audit", "checkpoint")
    assert refused.exit_code == 1
    assert "refused to sign the audit chain" in said(refused)
    assert (checkpoint_rows(db), file_checkpoints(settings)) == before


def test_checkpoint_interrupted_between_file_and_database_is_completed(
    db: Any, settings: Settings
) -> None:
    """The one disagreement the signer repairs: a crash after the line reached the file but
    before the row committed. The file is the trusted copy, so its row is restored."""
    build_chain(db, settings, checkpoints_at=(5, 10))
    intrude(db, lambda session: delete_checkpoint_rows(session, above=5))
    assert not verify(db, settings).ok
    assert seal(db, settings) is not None
    assert checkpoint_rows(db) == file_checkpoints(settings) == [5, 10, N]
    assert verify(db, settings).ok


def test_unfinished_line_at_the_end_of_the_file_is_ignored_and_replaced(
    db: Any, settings: Settings
) -> None:
    build_chain(db, settings, checkpoints_at=(5,))
    with settings.checkpoint_file.open("a", encoding="utf-8") as handle:
        handle.write('{"seq": 9, "hash": "ab')  # a crash in the middle of an append
    assert verify(db, settings).ok
    assert checkpoint(db, settings) == N
    assert verify(db, settings).ok
    assert settings.checkpoint_file.read_text().count("\n") == 2


# 4 -------------------------------------------------------------------------------------


def test_attack_4_checkpoint_refuses_to_sign_a_rewritten_chain(db: Any, settings: Settings) -> None:
    """Rewrite a sealed event and recompute every hash after it (an intruder who can read
    keys/ could sign that, but the operator's tools must not): the stored event at the last
    checkpoint no longer has the hash it signed, so nothing is signed."""
    build_chain(db, settings, checkpoints_at=(2, 10))
    rebuild_from(db, 3, action="auth:login")
    before = sealed_state(db, settings)

    refused = cli(settings, "audit", "checkpoint")
    assert refused.exit_code == 1
    assert "event 10 no longer matches the checkpoint that sealed it" in said(refused)
    assert refused.stdout == ""
    assert sealed_state(db, settings) == before
    assert_detected(db, settings, 3)

    # Removing the obstacle from the database does not help: the file still holds it.
    intrude(db, lambda session: delete_checkpoint_rows(session, above=2))
    refused = cli(settings, "audit", "checkpoint")
    assert refused.exit_code == 1
    assert "event 10 no longer matches the checkpoint that sealed it" in said(refused)
    assert checkpoint_rows(db) == [2]


def test_checkpoint_checks_every_event_after_the_last_one_it_trusts(
    db: Any, settings: Settings
) -> None:
    build_chain(db, settings, checkpoints_at=(10,))
    intrude(db, lambda session: set_event(session, 12, outcome="allow", detail=None))
    refused = cli(settings, "audit", "checkpoint")
    assert refused.exit_code == 1
    assert "event 12: event does not match the chain" in said(refused)
    assert checkpoint_rows(db) == [10]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_service_logs_a_refusal_by_its_type_only(db: Any, settings: Settings) -> None:
    from casemgr.app import _seal_once, create_app

    build_chain(db, settings, checkpoints_at=(2, 10))
    rebuild_from(db, 3, action="auth:login")
    app = create_app(settings)

    async def once() -> None:
        try:
            await _seal_once(app)
        finally:
            await app.state.engine.dispose()

    # Litestar configures logging itself, so listen on the service's logger directly.
    collect = Collect()
    logger = logging.getLogger("casemgr")
    logger.addHandler(collect)
    try:
        asyncio.run(once())
    finally:
        logger.removeHandler(collect)
    assert collect.messages == ["audit checkpoint failed: CheckpointRefused"]
    assert checkpoint_rows(db) == [2, 10]


# 5 -------------------------------------------------------------------------------------


def _write_key_file(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)
    path.chmod(0o600)


def test_attack_5_a_replaced_signing_key_neither_signs_nor_verifies(
    db: Any, settings: Settings, tmp_path: Path
) -> None:
    """Replace keys/audit-signing.key with one's own and re-sign everything. Verification
    trusts the public keys pinned in audit-signing.pub (and auditors' copies of it), never
    one derived from the private key, and the signer will not use a key it does not pin."""
    pub = settings.keys_dir / "audit-signing.pub"
    auditors_copy = tmp_path / "auditor" / "audit-signing.pub"
    auditors_copy.parent.mkdir()
    shutil.copyfile(pub, auditors_copy)
    build_chain(db, settings, checkpoints_at=(10,))

    own = Ed25519PrivateKey.generate()
    _write_key_file(
        settings.keys_dir / "audit-signing.key",
        own.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    refused = cli(settings, "audit", "checkpoint")
    assert refused.exit_code == 1
    assert f"the signing key {key_id(own.public_key())} is not among the trusted" in said(refused)

    # The intruder rebuilds the chain and re-signs it with their key, file and rows alike.
    tip = rebuild_from(db, 3, outcome="deny")
    at = clock.now()
    forged = Checkpoint(N, tip, at, key_id(own.public_key()), sign_checkpoint(own, N, tip, at))

    async def resign(session: AsyncSession) -> None:
        await delete_checkpoint_rows(session)
        await put_checkpoint_row(session, forged)

    intrude(db, resign)
    settings.checkpoint_file.write_text(forged.to_json_line())
    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "bad signature or an untrusted key" in (result.reason or "")
    assert_detected(db, settings, 1)

    # Replacing audit-signing.pub as well fools only whoever trusts keys/: not the auditor.
    _write_key_file(
        pub,
        own.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    code, line = cli_verify(settings, "--public-key", str(auditors_copy))
    assert (code, line["ok"], line["first_bad_seq"]) == (1, False, 1)


# Freshness -----------------------------------------------------------------------------


def test_unsealed_events_fail_once_older_than_the_deadline_and_pass_once_sealed(
    db: Any, settings: Settings, t0: datetime
) -> None:
    build_chain(db, settings, checkpoints_at=(10,))
    assert verify(db, settings).ok  # 11-15 are young
    clock.freeze(t0 + settings.seal_deadline - timedelta(seconds=1))
    assert verify(db, settings).ok
    past_the_deadline(settings, t0)
    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, 11)
    assert "event 11 is older than the seal deadline" in (result.reason or "")
    # Sealed late is still sealed: the checkpoint now covers them.
    assert checkpoint(db, settings) == N
    assert verify(db, settings).ok


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({}, 600),
        ({"CASEMGR_AUDIT_CHECKPOINT_SECONDS": "60"}, 120),
        ({"CASEMGR_AUDIT_CHECKPOINT_SECONDS": "0"}, 600),
        ({"CASEMGR_AUDIT_SEAL_DEADLINE_SECONDS": "3600"}, 3600),
    ],
)
def test_seal_deadline_is_twice_the_interval_unless_set(env: dict[str, str], seconds: int) -> None:
    assert Settings.from_env(env).seal_deadline == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CASEMGR_AUDIT_SEAL_DEADLINE_SECONDS": "0"}, "must be positive"),
        ({"CASEMGR_AUDIT_ANCHOR_URL": "ftp://anchor.example"}, "CASEMGR_AUDIT_ANCHOR_URL"),
        ({"CASEMGR_AUDIT_ANCHOR_URL": "syslog://:514"}, "names no host"),
        ({"CASEMGR_AUDIT_ANCHOR_URL": "syslog+tcp://h:port"}, "malformed port"),
    ],
)
def test_bad_audit_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_verify_result_names_its_reason_on_the_command_line_only_when_not_ok() -> None:
    assert audit.VerifyResult(True, 3, None).as_dict() == {
        "ok": True,
        "checked": 3,
        "first_bad_seq": None,
    }
    assert audit.VerifyResult(False, 3, 2, "why").as_dict()["reason"] == "why"
