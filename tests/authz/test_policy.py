"""The role × permission table, pinned whole, and the Authorizer held against plain Casbin."""

from __future__ import annotations

import csv
import random
import uuid

import casbin
import pytest

from casemgr.authz import Authorizer, Grant, Permission, Principal, Role
from casemgr.authz.core import POLICY_DIR

# SPEC §3, cell by cell. "edit"/"write"/"create" include reading what one writes; reach
# (own classes, paired students, own school) is decided on top of this, not here.
# Every change to policies/policy.csv must show up here, in review.
EXPECTED: dict[Role, set[str]] = {
    Role.CLASS_TEACHER: {
        "roster:read",
        "student:read",
        "student:create",
        "student:update",
        "student:lookup",
        "care_category:read",
        "care_category:write",
        "case:read",
        "case:write",
        "pairing:read",
        "pairing:create",
        "support_log:read",
        "support_log:write",
        "home_visit:read",
        "home_visit:write",
        "consent:record",
        "guidance:read",
        "emergency_access:request",
    },
    Role.TEACHER: {
        "roster:read",
        "student:lookup",
        "care_category:read",
        "case:read",
        "pairing:read",
        "support_log:read",
        "support_log:write",
        "home_visit:read",
        "home_visit:write",
        "guidance:read",
        "emergency_access:request",
    },
    Role.COUNSELOR: {
        "roster:read",
        "student:read",
        "student:lookup",
        "care_category:read",
        "case:read",
        "case:write",
        "pairing:read",
        "pairing:create",
        "support_log:read",
        "support_log:write",
        "screening_round:read",
        "screening_round:create",
        "consent:record",
        "screening_result:read",
        "screening_result:import",
        "screening_result:review",
        "counseling_note:read",
        "counseling_note:write",
        "guidance:read",
        "guidance:write",
        "report:read",
        "emergency_access:request",
    },
    Role.SCHOOL_LEADER: {
        "roster:read",
        "student:read",
        "student:create",
        "student:update",
        "student:lookup",
        "pairing:read",
        "pairing:create",
        "screening_round:read",
        "screening_round:create",
        "report:read",
        "class:manage",
        "user:manage",
        "emergency_access:request",
    },
    Role.BUREAU_ADMIN: {
        "report:read",
        "school:manage",
        "class:manage",
        "user:manage",
    },
    Role.AUDITOR: {
        "audit:read",
        "audit:verify",
        "emergency_access:review",
        # Operations (issue 11): marking unusual access reviewed.
        "audit:review",
    },
}

# School administration and onboarding (issue 6): organisational reads, the roles each
# granter may give, and the leader-only student administration.
_STAFF_READS = {"school:read", "class:read"}
_STAFF_GRANTS = {"user:grant_class_teacher", "user:grant_teacher", "user:grant_counselor"}
EXPECTED[Role.CLASS_TEACHER] |= _STAFF_READS
EXPECTED[Role.TEACHER] |= _STAFF_READS
EXPECTED[Role.COUNSELOR] |= _STAFF_READS
EXPECTED[Role.SCHOOL_LEADER] |= (
    _STAFF_READS
    | _STAFF_GRANTS
    | {
        "student:import",
        "school_year:rollover",
        "transfer:request",
        "transfer:read",
        "transfer:decide",
    }
)
EXPECTED[Role.BUREAU_ADMIN] |= (
    _STAFF_READS
    | _STAFF_GRANTS
    | {"user:grant_school_leader", "user:grant_bureau_admin", "user:grant_auditor"}
)

# Care programme (issue 7): exports for a guardian's request, erasure, home-visit
# requirements and progress counts.
EXPECTED[Role.CLASS_TEACHER] |= {"student:export", "visit_progress:read"}
EXPECTED[Role.TEACHER] |= {"visit_progress:read"}
EXPECTED[Role.COUNSELOR] |= {"student:export"}
EXPECTED[Role.SCHOOL_LEADER] |= {
    "student:erase",
    "visit_requirement:manage",
    "visit_progress:read",
}

# Resources that hold or reveal a student's personal data or case content.
CONTENT_RESOURCES = {
    "roster",
    "student",
    "care_category",
    "case",
    "pairing",
    "support_log",
    "home_visit",
    "screening_round",
    "consent",
    "screening_result",
    "counseling_note",
    "guidance",
}


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return Authorizer()


def test_the_whole_role_permission_table_is_pinned(authorizer):
    actual = {role: {p.value for p in authorizer.role_permissions(role)} for role in Role}

    assert actual == EXPECTED


def test_policy_file_names_only_known_roles_and_permissions():
    # A typo in policy.csv would silently grant nothing; an unused permission is dead code.
    granted: set[str] = set()
    with (POLICY_DIR / "policy.csv").open(encoding="utf-8") as handle:
        for row in csv.reader(handle, skipinitialspace=True):
            if not row or row[0].startswith("#"):
                continue
            kind, role, resource, action = row
            assert kind == "p"
            assert role in {r.value for r in Role}, row
            assert f"{resource}:{action}" in {p.value for p in Permission}, row
            granted.add(f"{resource}:{action}")
    assert granted == {p.value for p in Permission}


def test_auditor_and_bureau_admin_hold_no_content_permission(authorizer):
    auditor = {p.value for p in authorizer.role_permissions(Role.AUDITOR)}
    admin = authorizer.role_permissions(Role.BUREAU_ADMIN)

    assert auditor <= {"audit:read", "audit:verify", "audit:review", "emergency_access:review"}
    assert not {p for p in admin if p.resource in CONTENT_RESOURCES or p.resource == "audit"}
    assert Permission.EMERGENCY_ACCESS_REQUEST not in admin
    # And the content roles never read the audit trail they are recorded in.
    for role in (Role.CLASS_TEACHER, Role.TEACHER, Role.COUNSELOR, Role.SCHOOL_LEADER):
        assert not {p for p in authorizer.role_permissions(role) if p.resource == "audit"}


def test_screening_results_and_counseling_notes_are_counselor_only(authorizer):
    private = {
        Permission.SCREENING_RESULT_READ,
        Permission.SCREENING_RESULT_IMPORT,
        Permission.SCREENING_RESULT_REVIEW,
        Permission.COUNSELING_NOTE_READ,
        Permission.COUNSELING_NOTE_WRITE,
    }
    for role in Role:
        held = authorizer.role_permissions(role) & private
        assert held == (private if role is Role.COUNSELOR else set()), role


def _population(
    rng: random.Random, users: int, schools: list[str]
) -> dict[str, list[tuple[Role, str | None]]]:
    """Users with one or two grants; bureau roles everywhere, others per school."""
    school_roles = [Role.CLASS_TEACHER, Role.TEACHER, Role.COUNSELOR, Role.SCHOOL_LEADER]
    population: dict[str, list[tuple[Role, str | None]]] = {}
    for n in range(users):
        grants: list[tuple[Role, str | None]] = []
        if rng.random() < 0.1:
            grants.append((rng.choice([Role.BUREAU_ADMIN, Role.AUDITOR]), None))
        else:
            for _ in range(rng.choice([1, 1, 1, 2])):
                grants.append((rng.choice(school_roles), rng.choice(schools)))
        population[f"user-{n}"] = grants
    return population


def test_decisions_match_a_plain_casbin_enforcer():
    rng = random.Random(20261128)
    authorizer = Authorizer()
    school_ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(20)]
    schools = [str(s) for s in school_ids]
    population = _population(rng, 300, schools)

    enforcer = casbin.Enforcer(str(POLICY_DIR / "model.conf"), str(POLICY_DIR / "policy.csv"))
    enforcer.add_grouping_policies(
        [
            [user, role.value, school or "*"]
            for user, grants in population.items()
            for role, school in grants
        ]
    )
    class_id = uuid.uuid4()
    student_id = uuid.uuid4()
    principals = {
        user: Principal(
            user_id=uuid.uuid4(),
            username=user,
            grants=tuple(Grant(role, None if s is None else uuid.UUID(s)) for role, s in grants),
            # Reach is not Casbin's business: give every caller the class and student asked
            # about, so that only the role-in-domain decision is compared.
            class_ids=frozenset({class_id}),
            paired_student_ids=frozenset({student_id}),
        )
        for user, grants in population.items()
    }

    outcomes = {"allow": 0, "deny": 0, "forbidden": 0}
    users = sorted(population)
    for _ in range(2000):
        user = rng.choice(users)
        # Half the questions are about a school the user holds a grant in.
        own = [s for _, s in population[user] if s is not None]
        school = rng.choice(own if own and rng.random() < 0.5 else schools)
        perm = rng.choice(list(Permission))
        plain = enforcer.enforce(user, school, perm.resource, perm.action)
        # The documented semantics, computed independently of both.
        documented = any(
            perm.value in EXPECTED[role] and grant_school in (school, None)
            for role, grant_school in population[user]
        )
        decision = authorizer.decide(
            principals[user],
            perm,
            school_id=uuid.UUID(school),
            class_id=class_id,
            student_id=student_id,
        )
        assert decision.allowed == plain == documented, (user, population[user], school, perm)
        assert (decision.status == 403) == (not authorizer.may_ever(principals[user], perm))
        assert authorizer.may_ever(principals[user], perm) == any(
            perm.value in EXPECTED[role] for role, _ in population[user]
        )
        if decision.allowed:
            outcomes["allow"] += 1
        elif decision.status == 403:
            outcomes["forbidden"] += 1
        else:
            outcomes["deny"] += 1
    # Both answers, and both kinds of refusal, were exercised in earnest.
    assert min(outcomes.values()) >= 300, outcomes
