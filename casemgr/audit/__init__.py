"""Auditing in one place: every sensitive read, write, denial and login appends here.

``record`` appends inside the caller's transaction, so the access and its trace commit
together or not at all. ``record_denial`` is for refusals: it discards the caller's
unfinished work, commits the denial event on its own and leaves raising to the caller.
"""

from casemgr.audit.services import (
    ALLOW,
    DENY,
    Action,
    Actor,
    VerifyResult,
    list_events,
    record,
    record_denial,
    verify_chain,
    write_checkpoint,
)

__all__ = [
    "ALLOW",
    "DENY",
    "Action",
    "Actor",
    "VerifyResult",
    "list_events",
    "record",
    "record_denial",
    "verify_chain",
    "write_checkpoint",
]
