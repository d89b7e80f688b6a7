"""SPEC §3, the care programme's rows, cell by cell (the whole table is pinned in
tests/authz/test_policy.py; this reads like the specification)."""

from __future__ import annotations

import pytest

from casemgr.authz import Authorizer, Role

CT, T, C, L, A, AU = (
    Role.CLASS_TEACHER,
    Role.TEACHER,
    Role.COUNSELOR,
    Role.SCHOOL_LEADER,
    Role.BUREAU_ADMIN,
    Role.AUDITOR,
)
# permission -> the roles holding it (reach is decided on top: own classes, paired, school)
SPEC = {
    # care categories: class teacher edit; mentor read; counselor read
    "care_category:read": {CT, T, C},
    "care_category:write": {CT},
    # case file, timeline, tasks: class teacher edit; mentor read; counselor edit
    "case:read": {CT, T, C},
    "case:write": {CT, C},
    # pairing: class teacher create; mentor read own; counselor and leader create
    "pairing:read": {CT, T, C, L},
    "pairing:create": {CT, C, L},
    # support logs: class teacher, mentor, counselor write
    "support_log:read": {CT, T, C},
    "support_log:write": {CT, T, C},
    # home visits: class teacher and mentor write; counselor none
    "home_visit:read": {CT, T},
    "home_visit:write": {CT, T},
    # guidance: class teacher and mentor read; counselor write
    "guidance:read": {CT, T, C},
    "guidance:write": {C},
    # aggregate reports: counselor and leader (school), bureau admin (county)
    "report:read": {C, L, A},
    # emergency access: any content role asks, auditors review
    "emergency_access:request": {CT, T, C, L},
    "emergency_access:review": {AU},
    # export for a guardian: class teacher and counselor; erasure: school leader
    "student:export": {CT, C},
    "student:erase": {L},
    # home-visit requirements (leader) and progress counts
    "visit_requirement:manage": {L},
    "visit_progress:read": {CT, T, L},
}


@pytest.mark.parametrize("permission", sorted(SPEC))
def test_care_rows_match_the_specification(permission):
    authorizer = Authorizer()
    holders = {role for role in Role if permission in authorizer.role_permissions(role)}
    assert holders == SPEC[permission]
