"""What operators see of a running service: structured logs and Prometheus metrics.

**Logs** (``CASEMGR_LOG_FORMAT=text|json``, set up by ``casemgr serve``): every record goes
to stderr, in JSON one object per line::

    {"ts": "2026-09-07T01:00:00.123Z", "level": "info", "logger": "casemgr.access",
     "message": "request", "request_id": "5f0c…", "method": "GET",
     "route": "/api/v1/students/{student_id:uuid}", "status": 200, "duration_ms": 4.2}

One access record per request (``casemgr.access``; probes of ``/health``, ``/ready`` and
``/metrics`` at debug level) names the route *template*, never the concrete path: the ids
in a path are pseudonymous, but a log that lists who opened which student's file would be
a second access log outside the audit trail's controls (and a path can carry anything a
client typed). Never bodies, query strings, headers, tokens, cookies or client addresses
(the audit trail records the client for the accesses that matter). An exception is logged
by its type and the code locations it passed through, never its message, which may quote
values. ``request_id`` is new for each request, or the ``X-Request-ID`` that a trusted proxy
(``CASEMGR_TRUSTED_PROXIES``) sent when it looks like an id; the answer carries it back.

**Metrics** (``GET /metrics``, Prometheus text format, one registry per application):
request latency by method, route template and status; requests in progress; audit
appends (group-commit batches and in-transaction appends: latency, events); login
failures by channel and result; database pool gauges and, on SQLite, the writer queue.
No label ever holds an id or a personal value. The route answers only clients in
``CASEMGR_METRICS_ALLOW`` (default: this host) or a request carrying ``Authorization:
Bearer <token>`` with the token kept in ``CASEMGR_METRICS_TOKEN_FILE``; the client is the
one ``casemgr.net`` settles, so a request relayed by the reverse proxy counts as the
outside client it is, not as the proxy. Everyone else gets 403.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import re
import stat
import sys
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from casemgr.net import is_trusted, parse_address
from casemgr.problems import problem
from casemgr.settings import Settings

ACCESS_LOG = "casemgr.access"
UNMATCHED = "<unmatched>"
PROBES = frozenset({"/health", "/ready", "/metrics"})
REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
LOGIN_ROUTES = {"/api/v1/auth/login": "api", "/sign-in": "web"}
MIN_TOKEN_CHARS = 32
# Seconds: from a fast read to a slow import.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
AUDIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "casemgr_request_id", default=None
)


# -- logs ----------------------------------------------------------------------------------

# Extra attributes an access record carries (set with ``extra=``), in output order.
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")


def _stack(exc_info: Any) -> list[str]:
    """Where an exception passed (file:line in function), without its message or locals."""
    tb = exc_info[2] if exc_info else None
    return [
        f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(tb)
    ]


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["stack"] = _stack(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """One line per record for people; exceptions by type and location, as in JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            line += f" request_id={request_id}"
        if record.exc_info and record.exc_info[0] is not None:
            line += f" exc_type={record.exc_info[0].__name__}"
            line += "".join(f"\n    at {where}" for where in _stack(record.exc_info))
        return line


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send every logger's records to stderr in ``log_format`` (``casemgr serve``).

    uvicorn's own loggers propagate here too (``serve`` starts it with ``log_config=None``
    and its access log off: ours names route templates, uvicorn's the full path and query).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True


# -- metrics -------------------------------------------------------------------------------


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per application)."""

    def __init__(self, engine: AsyncEngine | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "casemgr_http_request_duration_seconds",
            "Time to answer a request, by method, route template and status.",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "casemgr_http_requests_in_progress",
            "Requests being answered now.",
            registry=self.registry,
        )
        self.login_failures = Counter(
            "casemgr_login_failures",
            "Failed sign-ins, by channel (api, web) and result (refused: 401, throttled: 429).",
            ("channel", "result"),
            registry=self.registry,
        )
        self.audit_append = Histogram(
            "casemgr_audit_append_duration_seconds",
            "Time to append audit events: a group-commit batch of reading requests (batch)"
            " or the events of a writing request's transaction (inline).",
            ("path",),
            buckets=AUDIT_BUCKETS,
            registry=self.registry,
        )
        self.audit_events = Counter(
            "casemgr_audit_events_appended",
            "Audit events appended, by path (batch, inline).",
            ("path",),
            registry=self.registry,
        )
        if engine is not None:
            self.registry.register(DatabaseCollector(engine))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).observe(seconds)
        channel = LOGIN_ROUTES.get(route)
        if channel is not None and method == "POST" and status in (401, 429):
            self.login_failures.labels(channel, "refused" if status == 401 else "throttled").inc()

    def observe_audit(self, path: str, seconds: float, events: int) -> None:
        """``casemgr.audit.AuditAppender.observer``: one append of ``events`` events."""
        self.audit_append.labels(path).observe(seconds)
        self.audit_events.labels(path).inc(events)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class DatabaseCollector(Collector):
    """Pool gauges, and on SQLite the writer queue (``casemgr.db.WriterQueue``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        pool: Any = self.engine.sync_engine.pool
        if all(hasattr(pool, name) for name in ("size", "checkedout", "overflow")):
            for name, doc, value in (
                ("casemgr_db_pool_size", "Connections the pool keeps.", pool.size()),
                ("casemgr_db_pool_checked_out", "Connections in use now.", pool.checkedout()),
                (
                    "casemgr_db_pool_overflow",
                    "Connections open beyond the pool's size (negative: not all opened yet).",
                    pool.overflow(),
                ),
            ):
                yield GaugeMetricFamily(name, doc, value=value)
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            from casemgr.db import writer_queue

            stats = writer_queue(url.render_as_string()).stats
            for name, doc, value in (
                ("casemgr_db_writer_turns", "SQLite writer turns taken.", stats.turns),
                ("casemgr_db_writer_waits", "SQLite writer turns that waited.", stats.waited),
                (
                    "casemgr_db_writer_wait_seconds",
                    "Time SQLite writers waited for their turn.",
                    stats.total_wait,
                ),
                ("casemgr_db_writer_timeouts", "SQLite writers that gave up.", stats.timeouts),
            ):
                yield CounterMetricFamily(name, doc, value=value)
            yield GaugeMetricFamily(
                "casemgr_db_writer_wait_max_seconds",
                "The longest wait of a SQLite writer since the process started.",
                value=stats.max_wait,
            )


def read_metrics_token(path: Path | None) -> bytes | None:
    """The digest of the metrics bearer token kept in ``path`` (None: no token accepted).

    The file must be readable by its owner only, like the key ring's files.
    """
    if path is None:
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"CASEMGR_METRICS_TOKEN_FILE: cannot read {path}") from exc
    if mode & 0o077:
        raise ValueError(
            f"CASEMGR_METRICS_TOKEN_FILE: {path} has mode {mode:04o}; make it readable by"
            f" its owner only (chmod 600 {path})"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"CASEMGR_METRICS_TOKEN_FILE: the token must have {MIN_TOKEN_CHARS} characters"
            " at least (e.g. openssl rand -hex 32)"
        )
    return hashlib.sha256(token.encode()).digest()


def metrics_allowed(
    client: str | None,
    authorization: str,
    allow: Sequence[Any],
    token_digest: bytes | None,
) -> bool:
    address = parse_address(client) if client else None
    if address is not None and is_trusted(address, allow):
        return True
    scheme, _, token = authorization.partition(" ")
    if token_digest is None or scheme.lower() != "bearer" or not token.strip():
        return False
    offered = hashlib.sha256(token.strip().encode()).digest()
    return hmac.compare_digest(offered, token_digest)


@get(
    "/metrics",
    exclude_from_auth=True,
    include_in_schema=False,
    media_type=CONTENT_TYPE_LATEST,
)
async def metrics(request: Request[Any, Any, State], state: State) -> Response[Any]:
    """Prometheus metrics, for the allowed networks or the bearer of the metrics token."""
    settings: Settings = state.settings
    client = request.client.host if request.client else None
    allowed = metrics_allowed(
        client,
        request.headers.get("authorization", ""),
        settings.metrics_allow,
        state.metrics_token_digest,
    )
    if not allowed:
        return problem(403, "Forbidden", "Metrics are served to the monitoring system only.")
    observed: Metrics = state.metrics
    return Response(
        observed.exposition(),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )


# -- per request ---------------------------------------------------------------------------


class RequestTelemetry:
    """ASGI middleware around everything: request id, access record, request metrics.

    It wraps ``casemgr.net.ForwardedHeaders`` from the outside, so its timing covers the
    whole answer; Litestar's router writes the matched route template into the scope.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, trusted_proxies: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted = tuple(trusted_proxies)
        self.log = logging.getLogger(ACCESS_LOG)

    def _request_id(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = parse_address(client[0]) if client else None
        if peer is not None and self.trusted and is_trusted(peer, self.trusted):
            for name, value in scope["headers"]:
                if name == REQUEST_ID_HEADER:
                    offered = value.decode("latin-1")
                    if _REQUEST_ID.match(offered):
                        return offered
                    break
        return uuid.uuid4().hex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        encoded_id = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", encoded_id)]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_progress.dec()
            seconds = time.perf_counter() - started
            method = str(scope.get("method", ""))
            route = str(scope.get("path_template") or UNMATCHED)
            self.metrics.observe_request(method, route, status, seconds)
            self.log.log(
                logging.DEBUG if route in PROBES else logging.INFO,
                "%s %s %s %.1fms",
                method,
                route,
                status,
                seconds * 1000,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
            request_id_var.reset(token)
