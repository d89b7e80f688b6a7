from __future__ import annotations

import hashlib
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
    # Operations (issue 11): auditors mark unusual access reviewed (casemgr.audit.unusual).
    AUDIT_REVIEW = "audit:review"
    SCHOOL_MANAGE = "school:manage"
    CLASS_MANAGE = "class:manage"
    USER_MANAGE = "user:manage"
    # -- school administration and onboarding (issue 6) ---------------------------------
    SCHOOL_READ = "school:read"
    CLASS_READ = "class:read"
    # Which roles a granter may hand out: one permission per role, so that "no role above
    # the granter's" and the separation of duties are policy lines, pinned by a test.
    USER_GRANT_CLASS_TEACHER = "user:grant_class_teacher"
    USER_GRANT_TEACHER = "user:grant_teacher"
    USER_GRANT_COUNSELOR = "user:grant_counselor"
    USER_GRANT_SCHOOL_LEADER = "user:grant_school_leader"
    USER_GRANT_BUREAU_ADMIN = "user:grant_bureau_admin"
    USER_GRANT_AUDITOR = "user:grant_auditor"
    STUDENT_IMPORT = "student:import"
    SCHOOL_YEAR_ROLLOVER = "school_year:rollover"
    TRANSFER_REQUEST = "transfer:request"
    TRANSFER_READ = "transfer:read"
    TRANSFER_DECIDE = "transfer:decide"
    # -- care programme (issue 7) -------------------------------------------------------
    # A guardian's request for the whole record (PIPL Art. 45); crypto-shredding a student.
    STUDENT_EXPORT = "student:export"
    STUDENT_ERASE = "student:erase"
    # Yearly home-visit requirements of a school, and progress against them (counts only).
    VISIT_REQUIREMENT_MANAGE = "visit_requirement:manage"
    VISIT_PROGRESS_READ = "visit_progress:read"

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


_ROLE_TABLES: dict[bytes, dict[Role, frozenset[Permission]]] = {}


def _role_table(enforcer: casbin.Enforcer, source: bytes) -> dict[Role, frozenset[Permission]]:
    """Casbin's decision for every role and permission, computed once per model+policy
    text in a process (hundreds of ``enforce`` calls: worth keeping between apps)."""
    key = hashlib.sha256(source).digest()
    if key not in _ROLE_TABLES:
        _ROLE_TABLES[key] = {
            role: frozenset(
                perm
                for perm in Permission
                # A role name as subject matches itself through g(); any domain will do.
                if enforcer.enforce(role.value, "*", perm.resource, perm.action)
            )
            for role in Role
        }
    return _ROLE_TABLES[key]


class Authorizer:
    """Role decisions from Casbin, reach decisions from relationships."""

    def __init__(self, model_path: Path | None = None, policy_path: Path | None = None) -> None:
        self.model_path = model_path or POLICY_DIR / "model.conf"
        self.policy_path = policy_path or POLICY_DIR / "policy.csv"
        # Casbin logs the whole policy at INFO when loading; that belongs in review, not logs.
        logging.getLogger("casbin").setLevel(logging.WARNING)
        self.enforcer = casbin.Enforcer(str(self.model_path), str(self.policy_path))
        self._role_permissions = _role_table(
            self.enforcer, self.model_path.read_bytes() + b"\0" + self.policy_path.read_bytes()
        )

    def role_permissions(self, role: Role) -> frozenset[Permission]:
        return self._role_permissions[role]

    def may_ever(self, principal: Principal, perm: Permission) -> bool:
        return any(perm in self._role_permissions[g.role] for g in principal.grants)

    def schools_holding(
        self, principal: Principal, perm: Permission
    ) -> frozenset[uuid.UUID] | None:
        """The schools (Casbin domains) in which a grant of the caller holds ``perm``;
        None when a bureau grant holds it in every school.

        For organisational records (schools, classes) the domain is the whole reach: a
        class teacher sees the names of the school's classes without reaching students.
        """
        schools = set()
        for grant in principal.grants:
            if perm in self._role_permissions[grant.role]:
                if grant.school_id is None:
                    return None
                schools.add(grant.school_id)
        return frozenset(schools)

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
        # Care programme (issue 7): a class teacher paired as a mentor with a student of
        # another class reaches that student as a mentor (role ``teacher``) would.
        if (
            student_id is not None
            and student_id in principal.paired_student_ids
            and perm in self._role_permissions[Role.TEACHER]
        ):
            for grant in holding:
                if grant.role is Role.CLASS_TEACHER and grant.school_id == school_id:
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

    def decide_in_school(
        self, principal: Principal, perm: Permission, school_id: uuid.UUID
    ) -> Decision:
        """Decide ``perm`` by the caller's roles in ``school_id`` alone, reach aside.

        Care programme (issue 7): for the one action that by nature goes beyond a role's
        reach, asking for emergency access to a student of one's own school (SPEC P6).
        Bureau grants never count here.
        """
        holding = [g for g in principal.grants if perm in self._role_permissions[g.role]]
        for grant in holding:
            if grant.school_id is not None and grant.school_id == school_id:
                return Decision(True, 200, grant.role)
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
