"""The audit trail: an append-only, hash-chained, gap-free sequence of events.

The database refuses UPDATE and DELETE on ``audit_events`` and ``audit_checkpoints``
(triggers created by the migrations); ``audit_head`` holds the chain's tip and is the lock
that serialises appends.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Integer, LargeBinary, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgr.db import Base, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    role: Mapped[str | None] = mapped_column(String(32))
    school_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    student_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    outcome: Mapped[str] = mapped_column(String(8))
    purpose: Mapped[str | None] = mapped_column(String(64))
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)
    # Canonical JSON of non-content facts (a status code, a count, a reason code).
    detail: Mapped[str | None] = mapped_column(Text)
    # The network address the request came from (the real peer, or a trusted proxy's client).
    client_addr: Mapped[str | None] = mapped_column(String(45))
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditHead(Base):
    """The single row holding the chain's tip; appends lock it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """A signed statement "the chain's event ``seq`` has hash ``hash``".

    Each is also appended to a file outside the database (settings.checkpoint_file) and
    sent to the external anchor. Verification trusts those copies, not this table: a row
    the file lacks vouches for nothing (``checkpoints``).
    """

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
