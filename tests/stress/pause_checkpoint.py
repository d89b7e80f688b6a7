"""``casemgr`` with one change, for a test: a checkpoint stops right after its line reached
the checkpoint file, before its database row commits, and waits there to be killed.

    STRESS_CHECKPOINT_MARKER=/tmp/x python -m tests.stress.pause_checkpoint serve --port N

It creates the marker file once the line is written (and fsynced), then blocks the whole
process. The service's own code has no such hook: the pause exists only in this wrapper,
which no deployment runs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import casemgr.audit.checkpoints as checkpoints
from casemgr.cli import main

_append_records = checkpoints.append_records


def _append_then_wait(anchor: Any, records: Any) -> None:
    _append_records(anchor, records)
    Path(os.environ["STRESS_CHECKPOINT_MARKER"]).write_text("line written\n", encoding="utf-8")
    threading.Event().wait()  # until SIGKILL


checkpoints.append_records = _append_then_wait  # type: ignore[assignment]

if __name__ == "__main__":
    main()
