"""Tables of the key hierarchy: wrapped data keys and rotation progress."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgr.db import Base, UTCDateTime, new_id, utcnow


class DataKey(Base):
    """A 256-bit data key, stored only wrapped by a key-encryption key.

    Each student has one; erasing the student destroys it (``wrapped`` becomes NULL), which
    makes every ciphertext sealed under it unreadable, in backups too. ``label`` names the
    few system keys (for example the one sealing TOTP secrets).
    """

    __tablename__ = "data_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    purpose: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(64), unique=True)
    kek_version: Mapped[int | None] = mapped_column(Integer, index=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class KeyRotation(Base):
    """One run of ``casemgr keys rotate``; an unfinished row is resumed by the next run.

    ``kind`` is ``kek`` (rewrap data keys) or ``blind_index`` (recompute lookup indexes).
    """

    __tablename__ = "key_rotations"
    __table_args__ = (UniqueConstraint("kind", "target_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), default="kek", server_default="kek")
    target_version: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rewrapped: Mapped[int] = mapped_column(Integer, default=0)
