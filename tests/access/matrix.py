"""Who may do what to which record: the expected outcome of every route, from SPEC §3.

Read this file top to bottom:

1. :data:`SPEC_3` is the reach table of SPEC §3, copied word for word, and
   :data:`BEYOND_SPEC_3` adds, in the same form, the rules SPEC §6, P6 and docs/api.md
   state for routes §3 has no row for.
2. :data:`CELLS` says what each cell's words mean: a scope (which records) and the
   actions allowed in it. "edit", "write" and "create" include reading.
3. :data:`RULES` gives every route of the API the row and action it is judged by, and the
   kind of record it names (a student, a class, a school, ...).
4. :func:`expected` derives the outcome of one request: ``ALLOW``, ``403`` (the role can
   never do this) or ``404`` (the record is out of reach), as SPEC P2 says. An emergency
   grant (P6) lets its holder act on that student "as a class teacher would".

The test (``test_matrix.py``) sends each route as each role at a record of each target
(``scene.py``: own, neighbour, emergency, other school) and compares. A route of the app
that has no rule here fails the test until it is given one.
"""

# ruff: noqa: E501 -- the tables below are SPEC §3's rows word for word, one line each.
from __future__ import annotations

from dataclasses import dataclass

# -- 1. the table ---------------------------------------------------------------------

COLUMNS = (
    "class teacher",
    "teacher (mentor)",
    "counselor",
    "school leader",
    "bureau admin",
    "auditor",
)

SPEC_3 = """
| roster (code, name, student no.) | own classes | paired students | school | school | – | – |
| student personal details | own classes, edit | – | school, read | school, edit | – | – |
| care categories | own classes, edit | read (paired) | school, read | – | – | – |
| case file, timeline, tasks | own classes, edit | paired, read | school, edit | – | – | – |
| pairing | own classes, create | read own | school, create | school, create | – | – |
| support logs | own classes, write | paired, write | school, write | – | – | – |
| home visits | own classes, write | paired, write | – | – | – | – |
| screening rounds, consent | record consent (own classes) | – | school, all | school, create rounds | – | – |
| screening answers, scores, reviews | – | – | school | – | – | – |
| counseling notes | – | – | school | – | – | – |
| guidance for teachers | read (own classes) | read (paired) | write | – | – | – |
| aggregate reports (suppressed) | – | – | school | school | county | – |
| audit events, verify | – | – | – | – | – | read |
| users, schools, classes | – | – | – | school users/classes | all | – |
"""

# Rows for routes SPEC §3 does not list, each from where the rule is stated.
BEYOND_SPEC_3 = """
| own account (§6 /me, login, logout) | self | self | self | self | self | self |
| school and class names (§6 "within reach"; docs/api.md §3) | school | school | school | school | county | – |
| student export (§6: "class teacher (own classes) and counselor") | own classes | – | school | – | – | – |
| student erasure (§6: "school leader") | – | – | – | school | – | – |
| roster import, school year, transfers (§6: the school leader) | – | – | – | school | – | – |
| emergency access (P6: "any staff member with a content role") | school | school | school | school | – | – |
| emergency access review (P6: "auditors review each one") | – | – | – | – | – | review |
| home-visit requirements (README: leaders) | – | – | – | school, edit | – | – |
| home-visit progress, counts (README) | own classes | paired students | – | school | – | – |
| unusual access review (issue 11: auditors settle what the trail flags) | – | – | – | – | – | review |
| service metrics (README: the monitoring system's network or token, no person) | – | – | – | – | – | – |
"""


def _parse(table: str) -> dict[str, dict[str, str]]:
    rows = {}
    for line in table.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 1 + len(COLUMNS), line
        rows[cells[0]] = dict(zip(COLUMNS, cells[1:], strict=True))
    return rows


TABLE = {**_parse(SPEC_3), **_parse(BEYOND_SPEC_3)}

# -- 2. what the words mean -----------------------------------------------------------

OWN_CLASSES, PAIRED, SCHOOL, COUNTY, SELF = "own classes", "paired", "school", "county", "self"
READ = frozenset({"read"})
WRITE = frozenset({"read", "write"})


@dataclass(frozen=True)
class Reach:
    scope: str
    actions: frozenset[str]


CELLS: dict[str, Reach | None] = {
    "–": None,
    "own classes": Reach(OWN_CLASSES, WRITE),
    "paired students": Reach(PAIRED, READ),
    "school": Reach(SCHOOL, WRITE),
    "county": Reach(COUNTY, READ),
    "own classes, edit": Reach(OWN_CLASSES, WRITE),
    "own classes, create": Reach(OWN_CLASSES, WRITE),
    "own classes, write": Reach(OWN_CLASSES, WRITE),
    "school, read": Reach(SCHOOL, READ),
    "school, edit": Reach(SCHOOL, WRITE),
    "school, create": Reach(SCHOOL, WRITE),
    "school, write": Reach(SCHOOL, WRITE),
    "read (paired)": Reach(PAIRED, READ),
    "paired, read": Reach(PAIRED, READ),
    "read own": Reach(PAIRED, READ),
    "paired, write": Reach(PAIRED, WRITE),
    "read (own classes)": Reach(OWN_CLASSES, READ),
    # The counselor writes guidance for the students of the school.
    "write": Reach(SCHOOL, WRITE),
    "record consent (own classes)": Reach(OWN_CLASSES, frozenset({"read", "record consent"})),
    "school, all": Reach(SCHOOL, frozenset({"read", "write", "record consent", "create rounds"})),
    "school, create rounds": Reach(SCHOOL, frozenset({"read", "create rounds"})),
    "read": Reach(COUNTY, READ),
    "review": Reach(COUNTY, WRITE),
    "school users/classes": Reach(SCHOOL, frozenset({"read", "users", "classes"})),
    "all": Reach(COUNTY, frozenset({"read", "users", "classes", "schools"})),
    "self": Reach(SELF, WRITE),
}

# -- 3. every route -------------------------------------------------------------------

# What a route names, and so which targets it is sent at (``scene.py``).
STUDENT = "student"  # own, neighbour, emergency, other_school
CLASS = "class"  # own (A1), neighbour (A2), other_school (B1)
ROUND = "round"  # own (school A's round), other_school
SCHOOL_ = "school"  # own (A), other_school (B)
USER = "user"  # a staff account of school A, of school B
TRANSFER = "transfer"  # asking for a student of school A, of school B
MINE = "mine"  # the caller's own session or task, or another user's
NONE = "none"  # a list or an action that names no record: one request
PUBLIC = "public"  # no token needed
TARGETS = {
    STUDENT: ("own", "neighbour", "emergency", "other_school"),
    CLASS: ("own", "neighbour", "other_school"),
    ROUND: ("own", "other_school"),
    SCHOOL_: ("own", "other_school"),
    USER: ("own", "other_school"),
    TRANSFER: ("own", "other_school"),
    MINE: ("own", "other_school"),
    NONE: ("any",),
    PUBLIC: ("any",),
}


@dataclass(frozen=True)
class Rule:
    row: str
    action: str
    names: str


R, N = (
    "roster (code, name, student no.)",
    'school and class names (§6 "within reach"; docs/api.md §3)',
)
P = "student personal details"
CAT, CASE, PAIR = "care categories", "case file, timeline, tasks", "pairing"
LOG, VISIT = "support logs", "home visits"
ROUNDS, ANSWERS = "screening rounds, consent", "screening answers, scores, reviews"
NOTES, GUIDE = "counseling notes", "guidance for teachers"
REPORT, AUDIT, ADMIN = (
    "aggregate reports (suppressed)",
    "audit events, verify",
    "users, schools, classes",
)
ME = "own account (§6 /me, login, logout)"
EXPORT = 'student export (§6: "class teacher (own classes) and counselor")'
ERASE = 'student erasure (§6: "school leader")'
LEAD = "roster import, school year, transfers (§6: the school leader)"
EMERG = 'emergency access (P6: "any staff member with a content role")'
REVIEW = 'emergency access review (P6: "auditors review each one")'
VREQ, VPROG = "home-visit requirements (README: leaders)", "home-visit progress, counts (README)"
UNUSUAL = "unusual access review (issue 11: auditors settle what the trail flags)"
METRICS = "service metrics (README: the monitoring system's network or token, no person)"

RULES: dict[str, Rule] = {
    # service
    "GET /health": Rule(ME, "read", PUBLIC),
    "GET /ready": Rule(ME, "read", PUBLIC),
    "GET /metrics": Rule(METRICS, "read", NONE),
    "POST /api/v1/auth/login": Rule(ME, "write", PUBLIC),
    "POST /api/v1/auth/logout": Rule(ME, "write", NONE),
    "GET /api/v1/me": Rule(ME, "read", NONE),
    "GET /api/v1/me/sessions": Rule(ME, "read", NONE),
    "DELETE /api/v1/me/sessions/{session_id}": Rule(ME, "write", MINE),
    "POST /api/v1/me/password": Rule(ME, "write", NONE),
    "POST /api/v1/me/totp": Rule(ME, "write", NONE),
    "POST /api/v1/me/totp/confirm": Rule(ME, "write", NONE),
    # students
    "POST /api/v1/students": Rule(P, "write", CLASS),
    "GET /api/v1/students/{student_id}": Rule(P, "read", STUDENT),
    "PATCH /api/v1/students/{student_id}": Rule(P, "write", STUDENT),
    "POST /api/v1/students/lookup": Rule(R, "read", NONE),
    "GET /api/v1/classes/{class_id}/students": Rule(R, "read", CLASS),
    # schools, classes, accounts
    "GET /api/v1/schools": Rule(N, "read", NONE),
    "GET /api/v1/schools/{school_id}/classes": Rule(N, "read", SCHOOL_),
    "POST /api/v1/schools": Rule(ADMIN, "schools", NONE),
    "POST /api/v1/schools/{school_id}/classes": Rule(ADMIN, "classes", SCHOOL_),
    "POST /api/v1/classes/{class_id}/teachers": Rule(ADMIN, "classes", CLASS),
    "DELETE /api/v1/classes/{class_id}/teachers/{user_id}": Rule(ADMIN, "classes", CLASS),
    "GET /api/v1/users": Rule(ADMIN, "users", SCHOOL_),
    "POST /api/v1/users": Rule(ADMIN, "users", SCHOOL_),
    "POST /api/v1/users/{user_id}/disable": Rule(ADMIN, "users", USER),
    "POST /api/v1/users/{user_id}/reset-password": Rule(ADMIN, "users", USER),
    "POST /api/v1/schools/{school_id}/students/import": Rule(LEAD, "write", SCHOOL_),
    "POST /api/v1/schools/{school_id}/rollover": Rule(LEAD, "write", SCHOOL_),
    "GET /api/v1/students/transfers": Rule(LEAD, "read", NONE),
    "POST /api/v1/students/transfers": Rule(LEAD, "write", CLASS),
    "POST /api/v1/students/transfers/{transfer_id}/approve": Rule(LEAD, "write", TRANSFER),
    "POST /api/v1/students/transfers/{transfer_id}/decline": Rule(LEAD, "write", TRANSFER),
    # care programme
    "POST /api/v1/students/{student_id}/care-categories": Rule(CAT, "write", STUDENT),
    "POST /api/v1/care-categories/{category_id}/end": Rule(CAT, "write", STUDENT),
    "POST /api/v1/cases": Rule(CASE, "write", STUDENT),
    "GET /api/v1/cases": Rule(CASE, "read", NONE),
    "GET /api/v1/cases/{case_id}": Rule(CASE, "read", STUDENT),
    "PATCH /api/v1/cases/{case_id}": Rule(CASE, "write", STUDENT),
    "GET /api/v1/cases/{case_id}/timeline": Rule(CASE, "read", STUDENT),
    "POST /api/v1/cases/{case_id}/close": Rule(CASE, "write", STUDENT),
    "GET /api/v1/me/tasks": Rule(CASE, "read", NONE),
    "POST /api/v1/me/tasks/{task_id}/done": Rule(CASE, "read", MINE),
    "POST /api/v1/cases/{case_id}/pairings": Rule(PAIR, "write", STUDENT),
    "GET /api/v1/cases/{case_id}/pairings": Rule(PAIR, "read", STUDENT),
    "POST /api/v1/pairings/{pairing_id}/end": Rule(PAIR, "write", STUDENT),
    # The school's pairings are listed for those who set them up.
    "GET /api/v1/schools/{school_id}/pairings": Rule(PAIR, "write", SCHOOL_),
    "POST /api/v1/cases/{case_id}/support-logs": Rule(LOG, "write", STUDENT),
    "GET /api/v1/cases/{case_id}/support-logs": Rule(LOG, "read", STUDENT),
    "POST /api/v1/cases/{case_id}/guidance": Rule(GUIDE, "write", STUDENT),
    "POST /api/v1/students/{student_id}/home-visits": Rule(VISIT, "write", STUDENT),
    "GET /api/v1/students/{student_id}/home-visits": Rule(VISIT, "read", STUDENT),
    "PUT /api/v1/schools/{school_id}/visit-requirements": Rule(VREQ, "write", SCHOOL_),
    "GET /api/v1/schools/{school_id}/visit-requirements": Rule(VREQ, "read", SCHOOL_),
    "GET /api/v1/me/visit-progress": Rule(VPROG, "read", NONE),
    "GET /api/v1/schools/{school_id}/visit-progress": Rule(VPROG, "read", SCHOOL_),
    "POST /api/v1/students/{student_id}/emergency-access": Rule(EMERG, "write", STUDENT),
    "GET /api/v1/audit/emergency-access": Rule(REVIEW, "read", NONE),
    "POST /api/v1/audit/emergency-access/{grant_id}/review": Rule(REVIEW, "write", NONE),
    "GET /api/v1/students/{student_id}/export": Rule(EXPORT, "read", STUDENT),
    "POST /api/v1/students/{student_id}/erase": Rule(ERASE, "write", STUDENT),
    "GET /api/v1/reports/care-summary": Rule(REPORT, "read", SCHOOL_),
    # screening: the instruments and a round's progress serve those who run rounds; a
    # round's consents those who record them.
    "GET /api/v1/screening/instruments": Rule(ROUNDS, "create rounds", NONE),
    "GET /api/v1/screening/rounds": Rule(ROUNDS, "read", NONE),
    "POST /api/v1/screening/rounds": Rule(ROUNDS, "create rounds", SCHOOL_),
    "GET /api/v1/screening/rounds/{round_id}": Rule(ROUNDS, "read", ROUND),
    "GET /api/v1/screening/rounds/{round_id}/progress": Rule(ROUNDS, "create rounds", ROUND),
    "GET /api/v1/screening/rounds/{round_id}/consents": Rule(ROUNDS, "record consent", ROUND),
    "POST /api/v1/screening/rounds/{round_id}/consents": Rule(ROUNDS, "record consent", STUDENT),
    "POST /api/v1/screening/rounds/{round_id}/results": Rule(ANSWERS, "write", ROUND),
    "GET /api/v1/screening/review-queue": Rule(ANSWERS, "read", NONE),
    "GET /api/v1/screening/results/{result_id}": Rule(ANSWERS, "read", STUDENT),
    "POST /api/v1/screening/results/{result_id}/review": Rule(ANSWERS, "write", STUDENT),
    "GET /api/v1/students/{student_id}/counseling-notes": Rule(NOTES, "read", STUDENT),
    "POST /api/v1/students/{student_id}/counseling-notes": Rule(NOTES, "write", STUDENT),
    # audit
    "GET /api/v1/audit/events": Rule(AUDIT, "read", NONE),
    "GET /api/v1/audit/unusual": Rule(UNUSUAL, "read", NONE),
    "POST /api/v1/audit/unusual/{finding_id}/review": Rule(UNUSUAL, "write", NONE),
    "GET /api/v1/audit/verify": Rule(AUDIT, "read", NONE),
}

# -- 4. the outcome -------------------------------------------------------------------

ROLES = {
    "ct_a1": "class teacher",
    "teacher_a": "teacher (mentor)",
    "counselor_a": "counselor",
    "leader_a": "school leader",
    "admin": "bureau admin",
    "auditor": "auditor",
}
# The accounts holding a live emergency grant on the ``emergency`` student (P6). The
# counselor reaches every student of the school and needs none.
GRANT_HOLDERS = frozenset({"ct_a1", "teacher_a", "leader_a"})
ALLOW, FORBIDDEN, NOT_FOUND = "allow", 403, 404
# What an emergency grant never opens, though a class teacher may do it: the whole record
# taken away (an export answers a guardian's request, not an emergency) and the
# guardian's screening decisions. A holder is told it may never (403).
NOT_UNDER_EMERGENCY = frozenset({EXPORT, ROUNDS})


def reach(row: str, role: str) -> Reach | None:
    return CELLS[TABLE[row][ROLES[role]]]


def in_scope(scope: str, names: str, target: str) -> bool:
    """Whether a record of ``target`` kind is within a ``scope`` (scene.py's targets)."""
    if names == MINE:
        return target == "own"  # the caller's own session or task, never another's
    if scope in (COUNTY, SELF):
        return True
    if names == NONE:
        return True  # a list: filtered to the scope
    if scope == SCHOOL:
        return target in ("own", "neighbour", "emergency")
    # Own classes and paired students: the own student, the class (or round) holding it.
    return target == "own" and names in (STUDENT, CLASS, ROUND)


def expected(route: str, role: str, target: str, *, grants_live: bool = True) -> str | int:
    """The outcome of ``route`` sent by ``role`` at ``target`` (``grants_live=False``:
    after the emergency grants ran out)."""
    rule = RULES[route]
    if rule.names == PUBLIC:
        return ALLOW
    cell = reach(rule.row, role)
    if cell is not None and rule.action in cell.actions:
        if in_scope(cell.scope, rule.names, target):
            return ALLOW
        outcome: str | int = NOT_FOUND
    else:
        outcome = FORBIDDEN
    # P6: for 60 minutes the holder reaches that student's file as a class teacher would,
    # and so sees that student (alone) in the roster of the student's class.
    granted = (
        grants_live
        and role in GRANT_HOLDERS
        and (
            (rule.names == STUDENT and target == "emergency")
            or (rule.names == CLASS and target == "neighbour" and rule.action == "read")
        )
    )
    if granted and rule.row in NOT_UNDER_EMERGENCY:
        return FORBIDDEN
    as_class_teacher = reach(rule.row, "ct_a1")
    if granted and as_class_teacher is not None and rule.action in as_class_teacher.actions:
        return ALLOW
    return outcome
