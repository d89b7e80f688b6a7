"""The care programme's records (SPEC §4): every value about a student is sealed under that
student's data key, so erasing the student is one shred and a transfer moves one key.

What stays in clear is what authorization, ordering and counting need and what says nothing
about a child's care: ids, the student a record belongs to, who wrote it and when, the
school year it counts towards, and whether a pairing has ended (mentors' reach). Values of
closed sets (category, status, kind, mode) are sealed too, padded to one length.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgr.crypto.sealed import sealed
from casemgr.db import Base, UTCDateTime, new_id, utcnow

CATEGORIES = ("orphan", "single_parent", "disability", "financial_hardship", "left_behind")
CASE_STATUSES = ("open", "closed")
PAIRING_MODES = ("one_to_one", "many_to_one")
SUPPORT_KINDS = ("conversation", "academic", "material", "psychological", "family_contact", "other")
VISIT_MODES = ("in_person", "phone", "video")


class CaseFile(Base):
    """一人一册: one file per student, at most one open at a time."""

    __tablename__ = "case_files"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    # Random and neutral, in the same shape as student codes: it tells nothing.
    code: Mapped[str] = mapped_column(String(16), unique=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    status: Mapped[bytes] = sealed(str)
    opened_on: Mapped[bytes] = sealed(date)
    open_reason: Mapped[bytes] = sealed(str, min_bucket=128)
    closed_on: Mapped[bytes | None] = sealed(date, optional=True)
    close_reason: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=128)
    support_plan: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=256)
    review_on: Mapped[bytes] = sealed(date)


class CareCategory(Base):
    """关爱类别: a student's membership of one care category, with its history."""

    __tablename__ = "care_categories"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    case_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("case_files.id"), index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    category: Mapped[bytes] = sealed(str)
    since: Mapped[bytes] = sealed(date)
    details: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=128)
    review_on: Mapped[bytes | None] = sealed(date, optional=True)
    ended_on: Mapped[bytes | None] = sealed(date, optional=True)
    end_reason: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=128)


class Pairing(Base):
    """结对帮扶: one or more mentors supporting a student, with goals and dates."""

    __tablename__ = "pairings"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("case_files.id"), index=True)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # In clear because mentors' reach depends on it (resolved once per request).
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mode: Mapped[bytes] = sealed(str)
    goals: Mapped[bytes] = sealed(str, min_bucket=256)
    starts_on: Mapped[bytes] = sealed(date)
    ends_on: Mapped[bytes | None] = sealed(date, optional=True)
    end_reason: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=128)


class PairingMentor(Base):
    """A mentor of a pairing. ``student_id`` is repeated here so that a mentor's reach is
    one indexed query: the students of their pairings that have not ended."""

    __tablename__ = "pairing_mentors"

    pairing_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pairings.id"), primary_key=True)
    # Indexed on its own: every request of a mentor looks up their pairings by it.
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    is_lead: Mapped[bool] = mapped_column(Boolean, default=False)


class SupportLog(Base):
    """帮扶记录: one act of support, optionally with a date to follow up."""

    __tablename__ = "support_logs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("case_files.id"), index=True)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    school_year: Mapped[str] = mapped_column(String(9), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    occurred_on: Mapped[bytes] = sealed(date)
    kind: Mapped[bytes] = sealed(str)
    notes: Mapped[bytes] = sealed(str, min_bucket=256)
    follow_up_on: Mapped[bytes | None] = sealed(date, optional=True)


class HomeVisit(Base):
    """家访: a visit to ANY student's family (class teachers visit every family, so a
    visit says nothing about care status). Not linked to a case file in clear."""

    __tablename__ = "home_visits"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    school_year: Mapped[str] = mapped_column(String(9), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    visited_on: Mapped[bytes] = sealed(date)
    mode: Mapped[bytes] = sealed(str)
    notes: Mapped[bytes] = sealed(str, min_bucket=256)
    participant_ids: Mapped[bytes] = sealed(list[uuid.UUID], min_bucket=256)


class Guidance(Base):
    """Counselor guidance for teachers: what to do, never a score or an answer."""

    __tablename__ = "guidance_notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("case_files.id"), index=True)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    school_year: Mapped[str] = mapped_column(String(9), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    text: Mapped[bytes] = sealed(str, min_bucket=256)


class Task(Base):
    """An explicit follow-up task (a screening re-check, an urgent review's immediate
    task). Tasks derived from dates in other records are computed, not stored."""

    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    case_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("case_files.id"))
    assignee_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    kind: Mapped[bytes] = sealed(str)
    due_on: Mapped[bytes] = sealed(date)
    note: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=128)


class EmergencyGrant(Base):
    """SPEC P6: a staff member's 60-minute reach to one student's file, with a reason.

    The reason is sealed under a system key (``system:emergency``), not the student's:
    auditors, who never read case content, must read why the door was opened.
    """

    __tablename__ = "emergency_grants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("students.id"), index=True)
    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id"), index=True)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[bytes] = sealed(str, min_bucket=256)
    review_note: Mapped[bytes | None] = sealed(str, optional=True, min_bucket=128)


class VisitRequirement(Base):
    """How many home visits per student a school expects in a school year."""

    __tablename__ = "visit_requirements"

    school_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    school_year: Mapped[str] = mapped_column(String(9), primary_key=True)
    # Visits per student of their classes, by each class teacher.
    class_teacher_visits: Mapped[int] = mapped_column(Integer, default=1)
    # Visits per paired student, by each mentor.
    mentor_visits: Mapped[int] = mapped_column(Integer, default=1)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
