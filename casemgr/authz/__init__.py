"""Authorization in one place.

Two questions are asked for every access, in this order:

1. *Role*: does any of the caller's roles hold the permission (Casbin policy in
   ``policies/``, domain = school)? If no role ever does, the answer is 403.
2. *Reach*: is the record within that role's reach (a class teacher's own classes, a
   mentor's paired students, a counselor's or leader's own school)? If not, the answer is
   404, so that the record's existence is not revealed.

Casbin's decisions are computed once per role at start-up and kept as a table; a user's
grants come with the principal, so a decision costs a few set look-ups.
"""

from casemgr.authz.core import (
    BUREAU_ROLES,
    SECOND_FACTOR_ROLES,
    Authorizer,
    Decision,
    Grant,
    Permission,
    Principal,
    Role,
)
from casemgr.authz.enforce import actor_of, require

__all__ = [
    "BUREAU_ROLES",
    "SECOND_FACTOR_ROLES",
    "Authorizer",
    "Decision",
    "Grant",
    "Permission",
    "Principal",
    "Role",
    "actor_of",
    "require",
]
