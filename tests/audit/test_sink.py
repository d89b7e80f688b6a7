"""The external anchor (``CASEMGR_AUDIT_ANCHOR_URL``): every record of the checkpoint file
also goes over syslog (UDP, TCP) or HTTP to where the database's administrators cannot
rewrite it; a failed delivery loses nothing and is retried; an auditor verifies against the
anchor's copy."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from casemgr.audit.sink import state_path
from casemgr.settings import Settings
from tests.audit.helpers import (
    append_events,
    checkpoint,
    checkpoint_rows,
    cli_verify,
    delete_checkpoint_rows,
    file_checkpoints,
    intrude,
    rebuild_from,
    seal,
    verify,
)
from tests.audit.receivers import http_receiver, receiver

SYSLOG_HEADER = re.compile(r"^<85>1 \d{4}-\d\d-\d\dT[\d:.]+Z \S+ casemgr-audit \d+ - - (\{.*\})$")


def file_lines(settings: Settings) -> list[str]:
    return settings.checkpoint_file.read_text().splitlines()


def anchored(settings: Settings, url: str) -> Settings:
    return dataclasses.replace(settings, audit_anchor_url=url)


def delivered(settings: Settings) -> bytes:
    return state_path(settings.checkpoint_file).read_bytes()


@pytest.mark.parametrize("kind", ["syslog", "syslog+tcp", "http"])
def test_every_checkpoint_reaches_the_anchor_and_its_copy_verifies(
    db: Any, settings: Settings, tmp_path: Path, kind: str
) -> None:
    with receiver(kind) as anchor:
        settings = anchored(settings, anchor.url)
        append_events(db, 2)
        assert checkpoint(db, settings) == 2
        append_events(db, 5)
        assert checkpoint(db, settings) == 7
        messages = anchor.received(2)

    if kind == "http":
        bodies = [message.rstrip("\n") for message in messages]
    else:
        matches = [SYSLOG_HEADER.match(message) for message in messages]
        assert all(matches), messages
        bodies = [match.group(1) for match in matches if match]
    assert bodies == file_lines(settings)
    assert b'"delivered":2' in delivered(settings)

    # The auditor's copy is what the receiver kept, syslog headers and all.
    copy = tmp_path / "anchor-copy.log"
    copy.write_text("".join(message.rstrip("\n") + "\n" for message in messages))
    code, line = cli_verify(settings, "--checkpoint-file", str(copy))
    assert (code, line) == (0, {"ok": True, "checked": 7, "first_bad_seq": None})

    # Review finding 1 again, now with an anchor: the chain is rebuilt and both local copies
    # of the checkpoints are deleted, while its events are young. The anchor's copy holds
    # the checkpoints the database lost and the rebuilt chain no longer matches.
    rebuild_from(db, 3, outcome="deny")
    intrude(db, delete_checkpoint_rows)
    settings.checkpoint_file.unlink()
    assert verify(db, settings).ok  # nothing local contradicts it yet
    result = verify(db, settings, checkpoint_file=copy)
    assert (result.ok, result.first_bad_seq) == (False, 1)
    code, line = cli_verify(settings, "--checkpoint-file", str(copy))
    assert (code, line["first_bad_seq"]) == (1, 1)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_failed_delivery_keeps_the_checkpoint_and_is_retried_next_time(
    db: Any, settings: Settings
) -> None:
    collect = Collect()
    logger = logging.getLogger("casemgr.audit")
    logger.addHandler(collect)
    try:
        with http_receiver() as anchor:
            settings = anchored(settings, anchor.url)
            anchor.accepting = False
            append_events(db, 3)
            assert checkpoint(db, settings) == 3  # sealed in the database and the file
            assert checkpoint_rows(db) == file_checkpoints(settings) == [3]
            assert anchor.bodies == []
            assert not state_path(settings.checkpoint_file).exists()

            anchor.accepting = True
            append_events(db, 1)
            assert checkpoint(db, settings) == 4
            assert [body.rstrip("\n") for body in anchor.received(2)] == file_lines(settings)
            # Nothing new and nothing waiting: nothing is sent twice.
            assert seal(db, settings) is None
            assert anchor.bodies == []
    finally:
        logger.removeHandler(collect)
    assert collect.messages == [
        "audit anchor delivery failed (HTTPError); 1 records wait for the next checkpoint"
    ]
    assert verify(db, settings).ok


def test_unreachable_anchor_does_not_stop_sealing(db: Any, settings: Settings) -> None:
    with http_receiver() as closed:
        url = closed.url
    settings = anchored(settings, url)  # nothing listens there any more
    append_events(db, 2)
    assert checkpoint(db, settings) == 2
    assert verify(db, settings).ok


def test_a_new_anchor_receives_the_whole_history(db: Any, settings: Settings) -> None:
    with http_receiver() as first, http_receiver() as second:
        append_events(db, 2)
        checkpoint(db, anchored(settings, first.url))
        append_events(db, 2)
        checkpoint(db, anchored(settings, first.url))
        assert len(first.received(2)) == 2
        assert seal(db, anchored(settings, second.url)) is None
        assert [body.rstrip("\n") for body in second.received(2)] == file_lines(settings)
        assert first.bodies == []
