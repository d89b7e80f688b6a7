"""Screening records (SPEC §4): rounds and their classes in clear (they name no child), and
per student consents, results and counseling notes sealed under the student's data key.

Nothing in clear tells which student was flagged: status, band, flags and the review are
sealed and padded, and a result row exists for every student who took part.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

import msgspec
from sqlalchemy import Date, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgr.crypto.sealed import sealed
from casemgr.db import Base, UTCDateTime, new_id, utcnow

CONSENT_DECISIONS = ("granted", "declined", "withdrawn")
RESULT_STATUSES = ("below_threshold", "pending_review", "reviewed", "expired")
REVIEW_OUTCOMES = ("no_concern", "monitor", "support", "refer", "urgent")


class Review(msgspec.Struct, forbid_unknown_fields=True):
    """A counselor's review of one result, sealed as one value."""

    outcome: str
    notes: str
    reviewed_by: uuid.UUID
    reviewed_at: datetime
    guidance_for_teachers: str | None = None
    recheck_on: date | None = None
    case_id: uuid.UUID | None = None


class ScreeningRound(Base):
    __tablename__ = "screening_rounds"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    instrument: Mapped[str] = mapped_column(String(64))
    school_year: Mapped[str] = mapped_column(String(9), index=True)
    opens_on: Mapped[date] = mapped_column(Date)
    closes_on: Mapped[date] = mapped_column(Date)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RoundClass(Base):
    __tablename__ = "screening_round_classes"

    round_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("screening_rounds.id"), primary_key=True)
    class_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("classes.id"), primary_key=True)


class Consent(Base):
    """One guardian decision; the latest (by ``recorded_at``) governs."""

    __tablename__ = "screening_consents"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    round_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("screening_rounds.id"), index=True)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    recorded_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decision: Mapped[bytes] = sealed(str)
    guardian_name: Mapped[bytes] = sealed(str)
    recorded_on: Mapped[bytes] = sealed(date)


class ScreeningResult(Base):
    __tablename__ = "screening_results"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    round_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("screening_rounds.id"), index=True)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    imported_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Twelve months after administration (SPEC P3): past it the result is expired, and
    # retention erases it. The round's dates are in clear already, so this tells nothing.
    expires_on: Mapped[date] = mapped_column(Date, index=True)
    administered_on: Mapped[bytes] = sealed(date)
    answers: Mapped[bytes] = sealed(list[int | None], min_bucket=128)
    total: Mapped[bytes | None] = sealed(int, optional=True)
    scales: Mapped[bytes] = sealed(dict[str, int | None], min_bucket=256)
    band: Mapped[bytes] = sealed(str)
    flags: Mapped[bytes] = sealed(list[str])
    status: Mapped[bytes] = sealed(str)
    review: Mapped[bytes | None] = sealed(Review, optional=True, min_bucket=1024)


class CounselingNote(Base):
    """Counselors only (SPEC §3): never shown to teachers, leaders, admins or auditors."""

    __tablename__ = "counseling_notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    case_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("case_files.id"))
    result_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("screening_results.id"))
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    school_year: Mapped[str] = mapped_column(String(9), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[bytes] = sealed(str, min_bucket=256)


__all__ = [
    "CONSENT_DECISIONS",
    "RESULT_STATUSES",
    "REVIEW_OUTCOMES",
    "Consent",
    "CounselingNote",
    "Review",
    "RoundClass",
    "ScreeningResult",
    "ScreeningRound",
]
