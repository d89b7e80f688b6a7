"""Readiness: whether this process can serve requests now (``GET /ready``).

``GET /health`` is liveness: the process runs and answers, whatever the database does, so
a supervisor restarts it only when it is stuck. ``GET /ready`` asks the database: 200 when
a pooled connection reads the audit chain's head within ``READY_TIMEOUT_SECONDS`` (the
schema is there and the database answers), else 503 with Retry-After, so that a load
balancer sends requests elsewhere until the database is back. The process itself needs no
restart: the pool replaces dropped connections (``casemgr.db``), and requests meanwhile
answer 503 too (``casemgr.problems``). Neither route needs a login or is audited: they
read no personal data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from casemgr.db import read_only_engine
from casemgr.problems import service_unavailable

log = logging.getLogger("casemgr")

READY_TIMEOUT_SECONDS = 2.0
# The table every audited request writes to: present only in a migrated database.
_PROBE = text("SELECT last_seq FROM audit_head")


@get("/ready", exclude_from_auth=True, include_in_schema=True, tags=["service"])
async def ready(state: State) -> Response[dict[str, Any]]:
    """200 ``{"status": "ready"}`` when the database answers, else 503 (Retry-After)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            # A reader's connection: on SQLite it never queues behind the writer.
            async with read_only_engine(state.engine).connect() as connection:
                await connection.execute(_PROBE)
    except Exception as exc:  # whatever stops the probe means "not ready"
        log.warning("not ready: the database probe failed (%s)", type(exc).__name__)
        return service_unavailable("The database cannot be reached, or is not migrated yet.")
    return Response({"status": "ready"}, headers={"Cache-Control": "no-store"})
