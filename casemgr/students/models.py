from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgr.crypto.sealed import blind_index_column, sealed
from casemgr.db import Base, UTCDateTime, new_id, utcnow
from casemgr.students.schemas import Guardian


class Student(Base):
    """A student. Every personal field is ciphertext (see ``casemgr.crypto.sealed``).

    Only organisational columns stay in clear: school, class, the random neutral ``code``
    and the keyed blind indexes used for exact lookup.
    """

    __tablename__ = "students"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id"), index=True)
    class_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("classes.id"), index=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    data_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("data_keys.id"), unique=True)
    full_name: Mapped[bytes] = sealed(str)
    gender: Mapped[bytes] = sealed(str)
    birth_date: Mapped[bytes] = sealed(date)
    student_no: Mapped[bytes] = sealed(str)
    student_no_bidx: Mapped[bytes] = blind_index_column("student_no", scope="school_id")
    # Absent IDs seal their absence and get a random index, so no column says who has one.
    national_id: Mapped[bytes | None] = sealed(str, optional=True, absent_index="national_id_bidx")
    national_id_bidx: Mapped[bytes | None] = blind_index_column("national_id", optional=True)
    address: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=128)
    # Up to six guardians fit the 512-byte bucket: the count does not show.
    guardians: Mapped[bytes | None] = sealed(list[Guardian], optional=True, min_bucket=512)
    # Version of the blind-index key the two indexes were made with (key rotation).
    bidx_version: Mapped[int] = mapped_column(default=1, server_default="1")
    # "enrolled" or "left" (the top grade at the school-year rollover, or a departure);
    # ``left_on`` starts the retention clock. Neither says anything about care.
    enrolment: Mapped[str] = mapped_column(
        String(16), default="enrolled", server_default="enrolled", index=True
    )
    left_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TransferRequest(Base):
    """A receiving school leader's request for a student by national ID (SPEC §6).

    The request is answered the same whether or not the ID exists: ``student_id`` and
    ``from_school_id`` are resolved here, privately, and only the sending school's leader
    sees the request. The typed ID is sealed under a system key (the student's key may not
    exist, and the request must not depend on it); its blind index finds the student.
    """

    __tablename__ = "transfer_requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    to_school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id"), index=True)
    to_class_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("classes.id"))
    national_id: Mapped[bytes] = sealed(str)
    national_id_bidx: Mapped[bytes] = mapped_column(LargeBinary(8), index=True)
    student_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("students.id"), index=True)
    from_school_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("schools.id"), index=True)
    # pending, approved, declined, withdrawn
    status: Mapped[str] = mapped_column(String(16), default="pending")
    requested_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
