"""``verify_chain`` and ``casemgr audit verify`` name the first bad event after every kind of
tampering an intruder with database access (but without the signing key or the checkpoint
file) can do: change, delete, insert, swap, cut off, rebuild, forge a checkpoint."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.audit.chain import Checkpoint, key_id, sign_checkpoint
from casemgr.audit.models import AuditCheckpoint
from casemgr.settings import Settings
from tests.audit.helpers import (
    EVENTS,
    HASHED,
    N,
    append_events,
    assert_detected,
    build_chain,
    cli_verify,
    events,
    intrude,
    rebuild_from,
    rehash,
    set_event,
    set_head,
    verify,
)


def test_intact_chain_verifies_in_service_and_cli(db: Any, settings: Settings) -> None:
    build_chain(db, settings, checkpoints_at=(5, N))
    result = verify(db, settings)
    assert (result.ok, result.checked, result.first_bad_seq) == (True, N, None)
    assert result.checkpoints == 2

    code, line = cli_verify(settings)
    assert (code, line) == (0, {"ok": True, "checked": N, "first_bad_seq": None})
    # A successful verification is itself audited, and the chain stays intact.
    last = events(db)[-1]
    assert (last["seq"], last["action"], last["outcome"]) == (N + 1, "audit:verify", "allow")
    assert verify(db, settings).ok


def test_changed_field_is_reported_at_that_event(db: Any, settings: Settings) -> None:
    """Each change is made, detected at its event, then undone (and the chain verifies again,
    so the next case starts from an intact chain)."""
    build_chain(db, settings)
    rows = events(db)
    changes: list[tuple[int, dict[str, Any]]] = [
        (7, {"outcome": "deny"}),
        (1, {"action": "student:create"}),
        (11, {"detail": '{"n":99}'}),
        (9, {"role": "auditor", "actor_id": uuid.uuid4()}),
        (4, {"at": rows[3]["at"] + timedelta(microseconds=1)}),
        (N, {"student_id": None, "resource_id": None}),
    ]
    for seq, change in changes:
        original = {name: rows[seq - 1][name] for name in change}
        assert original != change

        async def tamper(session: AsyncSession, seq: int = seq, values: Any = change) -> None:
            await set_event(session, seq, **values)

        intrude(db, tamper)
        assert_detected(db, settings, seq)
        intrude(db, lambda session, seq=seq, values=original: set_event(session, seq, **values))
        assert verify(db, settings).ok, change


def test_deleted_event_is_reported_at_its_seq(db: Any, settings: Settings) -> None:
    build_chain(db, settings)

    async def tamper(session: AsyncSession) -> None:
        await session.execute(delete(EVENTS).where(EVENTS.c.seq == 8))

    intrude(db, tamper)
    assert_detected(db, settings, 8)


def test_inserted_event_breaks_the_chain_at_the_event_after_it(db: Any, settings: Settings) -> None:
    """The intruder renumbers events k.. to k+1.., inserts a forged event at k whose hashes
    are computed correctly (they know the algorithm) and moves the head. The forged event
    itself links correctly to k-1, so the chain breaks at k+1: the displaced genuine event
    still names the old k-1 hash as its predecessor, not the forged one."""
    build_chain(db, settings)
    k = 6
    rows = events(db)

    async def tamper(session: AsyncSession) -> None:
        for seq in range(N, k - 1, -1):  # from the top, so no two rows share a seq
            await set_event(session, seq, seq=seq + 1)
        forged = {**rows[k - 1], "seq": k, "action": "student:create", "detail": None}
        forged["prev_hash"] = rows[k - 2]["hash"]
        forged["hash"] = rehash(forged["prev_hash"], forged)
        await session.execute(insert(EVENTS).values(**forged))
        await set_head(session, N + 1, rows[-1]["hash"])

    intrude(db, tamper)
    stored = events(db)
    assert [e["seq"] for e in stored] == list(range(1, N + 2))
    assert stored[k - 1]["prev_hash"] == stored[k - 2]["hash"]  # the forgery links correctly
    assert_detected(db, settings, k + 1)


@pytest.mark.parametrize("swap_hashes", [True, False], ids=["with-hashes", "content-only"])
def test_swapped_events_are_reported_at_the_earlier_one(
    db: Any, settings: Settings, swap_hashes: bool
) -> None:
    build_chain(db, settings)
    i, j = 4, 9
    rows = events(db)
    columns = [c for c in (*HASHED, "prev_hash", "hash") if c != "seq"]
    if not swap_hashes:
        columns = [c for c in columns if c not in ("prev_hash", "hash")]

    async def tamper(session: AsyncSession) -> None:
        await set_event(session, i, **{c: rows[j - 1][c] for c in columns})
        await set_event(session, j, **{c: rows[i - 1][c] for c in columns})

    intrude(db, tamper)
    swapped = events(db)
    assert swapped[i - 1]["detail"] == rows[j - 1]["detail"]
    assert_detected(db, settings, i)


@pytest.mark.parametrize(
    "drop_db_checkpoints", [False, True], ids=["db-checkpoints-kept", "db-checkpoints-deleted"]
)
def test_cut_off_tail_is_caught_by_a_checkpoint(
    db: Any, settings: Settings, drop_db_checkpoints: bool
) -> None:
    """Deleting the newest events and moving the head back leaves a chain that links
    perfectly; only the signed checkpoint (the file copy survives the intruder) shows it."""
    build_chain(db, settings)
    rows = events(db)
    new_tip = N - 3

    async def tamper(session: AsyncSession) -> None:
        await session.execute(delete(EVENTS).where(EVENTS.c.seq > new_tip))
        await set_head(session, new_tip, rows[new_tip - 1]["hash"])
        if drop_db_checkpoints:
            await session.execute(delete(AuditCheckpoint.__table__))

    intrude(db, tamper)
    left = db.execute("SELECT count(*) FROM audit_checkpoints")[0][0]
    assert left == (0 if drop_db_checkpoints else 1)
    assert_detected(db, settings, new_tip + 1)


def test_cut_off_tail_without_resetting_the_head_is_reported(db: Any, settings: Settings) -> None:
    append_events(db, N)  # no checkpoint at all: the head row alone betrays the cut

    async def tamper(session: AsyncSession) -> None:
        await session.execute(delete(EVENTS).where(EVENTS.c.seq > N - 2))

    intrude(db, tamper)
    assert_detected(db, settings, N - 1)


def test_rebuilt_chain_is_caught_by_an_earlier_checkpoint(db: Any, settings: Settings) -> None:
    """The checkpoint at 10 no longer matches the rebuilt chain; the one at 2 still vouches
    for events 1-2, so 3 is the first event nothing vouches for."""
    build_chain(db, settings, checkpoints_at=(2, 10))
    rebuild_from(db, 3, outcome="deny")
    assert_detected(db, settings, 3)


def _forged_line(seq: int, chain_hash: bytes, key: Ed25519PrivateKey | None) -> str:
    """A checkpoint line signed with the intruder's own key, or with random bytes."""
    at = datetime.now(UTC)
    if key is None:
        signature = secrets.token_bytes(64)
        key = Ed25519PrivateKey.generate()
    else:
        signature = sign_checkpoint(key, seq, chain_hash, at)
    return Checkpoint(seq, chain_hash, at, key_id(key.public_key()), signature).to_json_line()


@pytest.mark.parametrize("forger", ["random-signature", "intruders-own-key"])
def test_forged_checkpoint_line_is_reported(db: Any, settings: Settings, forger: str) -> None:
    """The intruder rebuilds the chain from event 3 and adds a checkpoint line that matches
    the rebuilt chain to the file, but cannot sign it with the audit key. The forgery
    vouches for nothing, so the report names 3, the first event only it covers."""
    build_chain(db, settings, checkpoints_at=(2,))
    tip = rebuild_from(db, 3, action="auth:login")
    key = Ed25519PrivateKey.generate() if forger == "intruders-own-key" else None
    with settings.checkpoint_file.open("a", encoding="utf-8") as handle:
        handle.write(_forged_line(N, tip, key))
    result = verify(db, settings)
    assert "bad signature" in (result.reason or "")
    assert_detected(db, settings, 3)


def test_forged_checkpoint_row_in_the_database_is_reported(db: Any, settings: Settings) -> None:
    build_chain(db, settings, checkpoints_at=(10,))
    tip = events(db)[-1]
    forged = Checkpoint.from_json_line(_forged_line(N, tip["hash"], Ed25519PrivateKey.generate()))

    async def plant(session: AsyncSession) -> None:
        await session.execute(
            insert(AuditCheckpoint.__table__).values(
                seq=forged.seq,
                hash=forged.hash,
                at=forged.at,
                key_id=forged.key_id,
                signature=forged.signature,
            )
        )

    db.in_transaction(plant)  # INSERT needs no disarming: appending is allowed
    # The genuine checkpoint still vouches for 1-10; the forged one vouches for nothing.
    assert_detected(db, settings, 11)


def test_unreadable_checkpoint_file_line_is_reported(db: Any, settings: Settings) -> None:
    build_chain(db, settings, checkpoints_at=(5,))
    with settings.checkpoint_file.open("a", encoding="utf-8") as handle:
        handle.write('{"seq": 15, "hash": "not hex"\n')
    # Everything up to the last good checkpoint is still vouched for.
    assert_detected(db, settings, 6)
