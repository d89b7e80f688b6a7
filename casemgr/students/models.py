from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgr.db import Base, UTCDateTime, new_id, utcnow


class Student(Base):
    """A student. Every personal field is ciphertext (see ``casemgr.crypto``).

    Only organisational columns stay in clear: school, class, the random neutral ``code``
    and the keyed blind indexes used for exact lookup.
    """

    __tablename__ = "students"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id"), index=True)
    class_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("classes.id"), index=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    data_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("data_keys.id"), unique=True)
    full_name: Mapped[bytes] = mapped_column(LargeBinary)
    gender: Mapped[bytes] = mapped_column(LargeBinary)
    birth_date: Mapped[bytes] = mapped_column(LargeBinary)
    student_no: Mapped[bytes] = mapped_column(LargeBinary)
    student_no_bidx: Mapped[bytes] = mapped_column(LargeBinary(8), index=True)
    national_id: Mapped[bytes | None] = mapped_column(LargeBinary)
    national_id_bidx: Mapped[bytes | None] = mapped_column(LargeBinary(8), index=True)
    address: Mapped[bytes | None] = mapped_column(LargeBinary)
    guardians: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
