from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import casbin

from casemgr.settings import PROJECT_ROOT

POLICY_DIR = PROJECT_ROOT / "policies"


class Role(StrEnum):
    CLASS_TEACHER = "class_teacher"
    TEACHER = "teacher"
    COUNSELOR = "counselor"
    SCHOOL_LEADER = "school_leader"
    BUREAU_ADMIN = "bureau_admin"
    AUDITOR = "auditor"


BUREAU_ROLES = frozenset({Role.BUREAU_ADMIN, Role.AUDITOR})
SECOND_FACTOR_ROLES = frozenset(
    {Role.COUNSELOR, Role.SCHOOL_LEADER, Role.BUREAU_ADMIN, Role.AUDITOR}
)
CONTENT_ROLES = frozenset({Role.CLASS_TEACHER, Role.TEACHER, Role.COUNSELOR, Role.SCHOOL_LEADER})


class Permission(StrEnum):
    """``resource:action``; the same pairs appear in ``policies/policy.csv``."""

    ROSTER_READ = "roster:read"
    STUDENT_READ = "student:read"
    STUDENT_CREATE = "student:create"
    STUDENT_UPDATE = "student:update"
    STUDENT_LOOKUP = "student:lookup"
    CARE_CATEGORY_READ = "care_category:read"
    CARE_CATEGORY_WRITE = "care_category:write"
    CASE_READ = "case:read"
    CASE_WRITE = "case:write"
    PAIRING_READ = "pairing:read"
    PAIRING_CREATE = "pairing:create"
    SUPPORT_LOG_READ = "support_log:read"
    SUPPORT_LOG_WRITE = "support_log:write"
    HOME_VISIT_READ = "home_visit:read"
    HOME_VISIT_WRITE = "home_visit:write"
    SCREENING_ROUND_READ = "screening_round:read"
    SCREENING_ROUND_CREATE = "screening_round:create"
    CONSENT_RECORD = "consent:record"
    SCREENING_RESULT_READ = "screening_result:read"
    SCREENING_RESULT_IMPORT = "screening_result:import"
    SCREENING_RESULT_REVIEW = "screening_result:review"
    COUNSELING_NOTE_READ = "counseling_note:read"
    COUNSELING_NOTE_WRITE = "counseling_note:write"
    GUIDANCE_READ = "guidance:read"
    GUIDANCE_WRITE = "guidance:write"
    REPORT_READ = "report:read"
    AUDIT_READ = "audit:read"
    AUDIT_VERIFY = "audit:verify"
    EMERGENCY_ACCESS_REQUEST = "emergency_access:request"
    EMERGENCY_ACCESS_REVIEW = "emergency_access:review"
    SCHOOL_MANAGE = "school:manage"
    CLASS_MANAGE = "class:manage"
    USER_MANAGE = "user:manage"

    @property
    def resource(self) -> str:
        return self.value.split(":", 1)[0]

    @property
    def action(self) -> str:
        return self.value.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class Grant:
    role: Role
    school_id: uuid.UUID | None  # None: every school (bureau roles)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, with everything authorization needs to decide."""

    user_id: uuid.UUID
    username: str
    grants: tuple[Grant, ...]
    class_ids: frozenset[uuid.UUID] = frozenset()
    paired_student_ids: frozenset[uuid.UUID] = frozenset()
    # Students reached under a live emergency-access grant (SPEC P6).
    emergency_student_ids: frozenset[uuid.UUID] = frozenset()
    token_id: uuid.UUID | None = field(default=None, compare=False)
    # The caller's network address (the socket peer, or a trusted proxy's client).
    client: str | None = field(default=None, compare=False)
    # A one-time password not yet changed, or a required second factor not yet enrolled:
    # the token reaches only the routes that fix that.
    restricted: bool = field(default=False, compare=False)

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(g.role for g in self.grants)

    @property
    def school_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(g.school_id for g in self.grants if g.school_id is not None)

    @property
    def primary_role(self) -> Role | None:
        return self.grants[0].role if self.grants else None

    def roles_in(self, school_id: uuid.UUID | None) -> frozenset[Role]:
        """Roles that hold in ``school_id`` (bureau roles hold everywhere)."""
        return frozenset(
            g.role for g in self.grants if g.school_id is None or g.school_id == school_id
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int  # 200 allowed, 403 never allowed for the caller's roles, 404 out of reach
    role: Role | None = None
    # Allowed only through an emergency-access grant: every event under it is flagged.
    emergency: bool = False

    @property
    def forbidden(self) -> bool:
        return self.status == 403


FORBIDDEN = Decision(False, 403)
OUT_OF_REACH = Decision(False, 404)


class Authorizer:
    """Role decisions from Casbin, reach decisions from relationships."""

    def __init__(self, model_path: Path | None = None, policy_path: Path | None = None) -> None:
        self.model_path = model_path or POLICY_DIR / "model.conf"
        self.policy_path = policy_path or POLICY_DIR / "policy.csv"
        # Casbin logs the whole policy at INFO when loading; that belongs in review, not logs.
        logging.getLogger("casbin").setLevel(logging.WARNING)
        self.enforcer = casbin.Enforcer(str(self.model_path), str(self.policy_path))
        self._role_permissions: dict[Role, frozenset[Permission]] = {
            role: frozenset(
                perm
                for perm in Permission
                # A role name as subject matches itself through g(); any domain will do.
                if self.enforcer.enforce(role.value, "*", perm.resource, perm.action)
            )
            for role in Role
        }

    def role_permissions(self, role: Role) -> frozenset[Permission]:
        return self._role_permissions[role]

    def may_ever(self, principal: Principal, perm: Permission) -> bool:
        return any(perm in self._role_permissions[g.role] for g in principal.grants)

    def decide(
        self,
        principal: Principal,
        perm: Permission,
        *,
        school_id: uuid.UUID | None = None,
        class_id: uuid.UUID | None = None,
        student_id: uuid.UUID | None = None,
    ) -> Decision:
        """Decide ``perm`` on a record of ``school_id`` (and class, student when it has them).

        A live emergency grant on ``student_id`` lets a content role of the student's
        school act on that student as a class teacher would (SPEC P6), flagged.
        """
        holding = [g for g in principal.grants if perm in self._role_permissions[g.role]]
        for grant in holding:
            if grant.school_id is not None and grant.school_id != school_id:
                continue
            if self._within_reach(principal, grant.role, class_id, student_id):
                return Decision(True, 200, grant.role)
        if (
            student_id is not None
            and student_id in principal.emergency_student_ids
            and perm in self._role_permissions[Role.CLASS_TEACHER]
        ):
            for grant in principal.grants:
                if grant.school_id == school_id and grant.role in CONTENT_ROLES:
                    return Decision(True, 200, grant.role, emergency=True)
        return OUT_OF_REACH if holding else FORBIDDEN

    @staticmethod
    def _within_reach(
        principal: Principal,
        role: Role,
        class_id: uuid.UUID | None,
        student_id: uuid.UUID | None,
    ) -> bool:
        if role is Role.CLASS_TEACHER:
            # A class teacher reaches the classes they teach, and students in them.
            return class_id is not None and class_id in principal.class_ids
        if role is Role.TEACHER:
            return student_id is not None and student_id in principal.paired_student_ids
        # Counselors and leaders reach their whole school (matched above); bureau roles all.
        return True
