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
from casemgr.crypto.models import DataKey, KeyRotation
from casemgr.db import Base
from casemgr.schools.models import School, SchoolClass
from casemgr.students.models import Student

__all__ = [
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "AuthToken",
    "Base",
    "ClassAssignment",
    "DataKey",
    "KeyRotation",
    "KnownClient",
    "LoginThrottle",
    "RoleGrant",
    "School",
    "SchoolClass",
    "Student",
    "User",
]
