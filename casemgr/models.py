"""Imports every model so that ``Base.metadata`` is complete (Alembic, drift checks)."""

from casemgr.accounts.models import (
    AuthToken,
    ClassAssignment,
    KnownClient,
    LoginThrottle,
    RoleGrant,
    User,
)
from casemgr.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from casemgr.care.models import (
    CareCategory,
    CaseFile,
    EmergencyGrant,
    Guidance,
    HomeVisit,
    Pairing,
    PairingMentor,
    SupportLog,
    Task,
    VisitRequirement,
)
from casemgr.crypto.models import DataKey, KeyRotation
from casemgr.db import Base
from casemgr.schools.models import School, SchoolClass
from casemgr.screening.models import (
    Consent,
    CounselingNote,
    RoundClass,
    ScreeningResult,
    ScreeningRound,
)
from casemgr.students.models import Student, TransferRequest

__all__ = [
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "AuthToken",
    "Base",
    "CareCategory",
    "CaseFile",
    "ClassAssignment",
    "Consent",
    "CounselingNote",
    "DataKey",
    "EmergencyGrant",
    "Guidance",
    "HomeVisit",
    "KeyRotation",
    "KnownClient",
    "LoginThrottle",
    "Pairing",
    "PairingMentor",
    "RoleGrant",
    "RoundClass",
    "School",
    "SchoolClass",
    "ScreeningResult",
    "ScreeningRound",
    "Student",
    "SupportLog",
    "Task",
    "TransferRequest",
    "User",
    "VisitRequirement",
]
