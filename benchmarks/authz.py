"""Benchmark 2: one authorization decision, against a plain pycasbin ``Enforcer``.

10,000 users in 200 schools hold one or two school roles (a tenth a bureau role); each
question asks whether a user may take an action in a school. The same questions go to a
pycasbin ``Enforcer`` loaded with the same model, policy and role grants, and to
``casemgr.authz.Authorizer.decide`` (reach aside: every caller reaches the class and
student asked about, so that only the role-in-domain decision is compared). Every answer
must be the same; ``speedup_vs_pycasbin`` >= 20 (SPEC §8).
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from benchmarks.common import spread

USERS = 10_000
SCHOOLS = 200


def run_authz(*, questions: int, runs: int) -> dict[str, Any]:
    import casbin

    from casemgr.authz import Authorizer, Grant, Permission, Principal, Role
    from casemgr.authz.core import POLICY_DIR

    rng = random.Random(20261201)
    school_ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(SCHOOLS)]
    school_roles = [Role.CLASS_TEACHER, Role.TEACHER, Role.COUNSELOR, Role.SCHOOL_LEADER]
    population: dict[str, list[tuple[Role, uuid.UUID | None]]] = {}
    for n in range(USERS):
        if rng.random() < 0.1:
            population[f"user-{n}"] = [(rng.choice([Role.BUREAU_ADMIN, Role.AUDITOR]), None)]
        else:
            population[f"user-{n}"] = [
                (rng.choice(school_roles), rng.choice(school_ids))
                for _ in range(rng.choice([1, 1, 1, 2]))
            ]
    enforcer = casbin.Enforcer(str(POLICY_DIR / "model.conf"), str(POLICY_DIR / "policy.csv"))
    enforcer.add_grouping_policies(
        [
            [user, role.value, str(school) if school else "*"]
            for user, grants in population.items()
            for role, school in grants
        ]
    )
    authorizer = Authorizer()
    class_id, student_id = uuid.uuid4(), uuid.uuid4()
    principals = {
        user: Principal(
            user_id=uuid.uuid4(),
            username=user,
            grants=tuple(Grant(role, school) for role, school in grants),
            class_ids=frozenset({class_id}),
            paired_student_ids=frozenset({student_id}),
        )
        for user, grants in population.items()
    }
    users = sorted(population)
    permissions = list(Permission)
    asked = []
    for _ in range(questions):
        user = rng.choice(users)
        own = [s for _, s in population[user] if s is not None]
        school = rng.choice(own if own and rng.random() < 0.5 else school_ids)
        asked.append((user, school, rng.choice(permissions)))
    casbin_questions = [(u, str(s), p.resource, p.action) for u, s, p in asked]
    ours_questions = [(principals[u], p, s) for u, s, p in asked]

    def plain() -> tuple[float, list[bool]]:
        enforce = enforcer.enforce
        started = time.perf_counter()
        answers = [enforce(*q) for q in casbin_questions]
        return time.perf_counter() - started, answers

    def ours() -> tuple[float, list[bool]]:
        decide = authorizer.decide
        started = time.perf_counter()
        answers = [
            decide(p, perm, school_id=s, class_id=class_id, student_id=student_id).allowed
            for p, perm, s in ours_questions
        ]
        return time.perf_counter() - started, answers

    plain_times, our_times, speedups = [], [], []
    identical = True
    allowed = 0
    for _ in range(runs):
        plain_seconds, plain_answers = plain()
        our_seconds, our_answers = ours()
        identical = identical and plain_answers == our_answers
        allowed = sum(our_answers)
        plain_times.append(1e6 * plain_seconds / questions)
        our_times.append(1e6 * our_seconds / questions)
        speedups.append(plain_seconds / our_seconds)
    speedup = spread(speedups, 1)
    return {
        "benchmark": "authorization",
        "backend": None,
        "users": USERS,
        "schools": SCHOOLS,
        "questions": questions,
        "allowed": allowed,
        "runs": runs,
        "identical_decisions": identical,
        "decision_us": spread(our_times, 2),
        "pycasbin_us": spread(plain_times, 1),
        "speedup_vs_pycasbin": speedup["median"],
        "speedup_vs_pycasbin_runs": speedup,
        "targets": {"speedup_vs_pycasbin": ">= 20", "identical_decisions": True},
        "met": identical and speedup["median"] >= 20,
    }
