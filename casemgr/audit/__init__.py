"""Auditing in one place: every sensitive read, write, denial and login appends here.

``record`` appends inside the caller's transaction, so the access and its trace commit
together or not at all. A request's session defers its events to its commit
(``defer_events``): a transaction that changed data chains them just before it commits; one
that only read hands them over, and ``write_handed_over`` (before the request answers)
gives them to the ``AuditAppender``, which writes the events of many requests in one batch
(group commit) and returns only once its batch is durable.
``record_denial`` is for refusals: it discards the caller's unfinished work, commits the
denial event on its own and leaves raising to the caller.

Events form a gap-free hash chain (``chain``). ``seal`` signs its tip: a checkpoint stored
in the database, appended to the checkpoint file and sent to the external anchor
(``sink``), and it refuses to sign a chain that does not extend the last checkpoint it can
trust (``checkpoints``). ``verify_chain`` trusts only the public keys it is given (pinned
in ``audit-signing.pub``, followed through signed key transitions, ``anchors``), compares
the database's checkpoints with the file's, and fails on events left unsealed past the
seal deadline. ``rotation`` replaces the signing key.
"""

from casemgr.audit.checkpoints import (
    CheckpointRefused,
    VerifyResult,
    head_seq,
    seal,
    verify_chain,
    write_checkpoint,
)
from casemgr.audit.services import (
    ALLOW,
    DENY,
    Action,
    Actor,
    AuditAppender,
    appender_for,
    defer_events,
    list_events,
    record,
    record_denial,
    record_denials,
    write_handed_over,
    write_with_trail,
)

__all__ = [
    "ALLOW",
    "DENY",
    "Action",
    "Actor",
    "AuditAppender",
    "CheckpointRefused",
    "VerifyResult",
    "appender_for",
    "defer_events",
    "head_seq",
    "list_events",
    "record",
    "record_denial",
    "record_denials",
    "seal",
    "verify_chain",
    "write_checkpoint",
    "write_handed_over",
    "write_with_trail",
]
