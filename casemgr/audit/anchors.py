"""The checkpoint file: the anchors kept outside the database, and the trust they carry.

The file is append-only JSON lines (formats in ``chain``): checkpoints and key transitions
in the order they were written. Trust starts from the public keys pinned in a public-key
file and follows transitions forward: a transition signed by a trusted key makes its
successor trusted, and the retiring key may sign no checkpoint beyond the hand-over point.
Writers take ``anchor_lock`` so that the service and the command line never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from casemgr.audit.chain import (
    Checkpoint,
    KeyTransition,
    Record,
    checkpoint_signature_ok,
    key_id,
    parse_record,
)

_UNREADABLE = (ValueError, KeyError, TypeError, msgspec.DecodeError)


@dataclass(frozen=True)
class AnchorFile:
    """What a checkpoint file (or an anchor's copy of it) holds."""

    path: Path
    exists: bool
    records: list[Record]
    # The first line that is not a record; reading stops there.
    problem: str | None = None
    # Bytes up to the end of the last whole record. A longer file ends in an interrupted
    # append (no newline, unreadable) that no reader counts and the next append replaces.
    complete_bytes: int = 0
    needs_newline: bool = False

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [r for r in self.records if isinstance(r, Checkpoint)]

    @property
    def transitions(self) -> list[KeyTransition]:
        return [r for r in self.records if isinstance(r, KeyTransition)]


def read_anchor_file(path: Path) -> AnchorFile:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return AnchorFile(path, exists=False, records=[])
    records: list[Record] = []
    offset = 0
    number = 0
    for raw in data.splitlines(keepends=True):
        number += 1
        terminated = raw.endswith(b"\n")
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            offset += len(raw)
            continue
        try:
            record = parse_record(text)
        except _UNREADABLE:
            if not terminated:
                break  # an append cut short: ignored, and replaced by the next one
            return AnchorFile(
                path, True, records, f"checkpoint file line {number} is unreadable", offset
            )
        records.append(record)
        offset += len(raw)
        if not terminated:
            return AnchorFile(path, True, records, None, offset, needs_newline=True)
    return AnchorFile(path, True, records, None, offset)


def append_records(anchor: AnchorFile, records: Iterable[Record]) -> None:
    """Append records to the file ``anchor`` was read from (under ``anchor_lock``)."""
    payload = "".join(record.to_json_line() for record in records).encode()
    anchor.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(anchor.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size > anchor.complete_bytes:
            os.ftruncate(fd, anchor.complete_bytes)
        if anchor.needs_newline:
            payload = b"\n" + payload
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def anchor_lock(checkpoint_file: Path) -> AsyncIterator[None]:
    """Exclusive right to seal: one writer of the database's and the file's anchors at once.

    Polls a non-blocking lock so that a cancelled waiter (a service shutting down) leaves
    nothing behind.
    """
    lock_path = checkpoint_file.with_name(checkpoint_file.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)


@dataclass
class Trust:
    """The audit keys a verifier trusts: pinned ones and those handed over to."""

    keys: dict[str, Ed25519PublicKey]
    # Key id -> the checkpoint seq after which its successor signs.
    retired_after: dict[str, int] = field(default_factory=dict)
    # (first seq nothing vouches for, reason) for every transition that is not sound.
    problems: list[tuple[int, str]] = field(default_factory=list)

    def checkpoint_problem(self, cp: Checkpoint) -> str | None:
        """Why ``cp`` vouches for nothing, or None when its signature holds."""
        public = self.keys.get(cp.key_id)
        if public is None or not checkpoint_signature_ok(
            public, cp.seq, cp.hash, cp.at, cp.signature
        ):
            return f"checkpoint at {cp.seq} has a bad signature or an untrusted key"
        handed_over = self.retired_after.get(cp.key_id)
        if handed_over is not None and cp.seq > handed_over:
            return (
                f"checkpoint at {cp.seq} is signed by key {cp.key_id}, which handed over"
                f" at {handed_over}"
            )
        return None


def resolve_trust(
    pinned: Sequence[Ed25519PublicKey], transitions: Iterable[KeyTransition]
) -> Trust:
    trust = Trust(keys={key_id(key): key for key in pinned})
    for transition in transitions:
        retiring = trust.keys.get(transition.from_key_id)
        if retiring is None or not transition.signature_ok(retiring):
            trust.problems.append(
                (
                    transition.seq + 1,
                    f"key transition at {transition.seq} is not signed by a trusted key",
                )
            )
            continue
        if transition.from_key_id in trust.retired_after:
            trust.problems.append(
                (
                    transition.seq + 1,
                    f"key {transition.from_key_id} hands over twice (again at {transition.seq})",
                )
            )
            continue
        trust.retired_after[transition.from_key_id] = transition.seq
        trust.keys.setdefault(transition.to_key_id, transition.to_public_key)
    return trust
