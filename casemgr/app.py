"""The composition root: ``create_app(settings)`` wires everything; nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Response, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from casemgr import audit
from casemgr.accounts import passwords
from casemgr.accounts.controllers import AuthController, MeController, UserController
from casemgr.audit.controllers import AuditController
from casemgr.authz import Authorizer
from casemgr.backup import ShredLog
from casemgr.care.controllers import CONTROLLERS as CARE_CONTROLLERS
from casemgr.crypto import Crypto, KeyRing
from casemgr.db import create_engine, create_sessionmaker
from casemgr.dependencies import (
    provide_authorizer,
    provide_context,
    provide_crypto,
    provide_db_session,
    provide_principal,
    provide_sessions,
    provide_settings,
)
from casemgr.guards import JSON_MAX_BODY_BYTES, InputGuard
from casemgr.health import ready
from casemgr.net import ForwardedHeaders
from casemgr.observability import Metrics, RequestTelemetry, read_metrics_token
from casemgr.observability import metrics as metrics_route
from casemgr.openapi import ContractDocument
from casemgr.problems import EXCEPTION_HANDLERS, problem
from casemgr.reports.controllers import ReportController
from casemgr.schools.controllers import SchoolController, TransferController
from casemgr.screening.controllers import ScreeningController
from casemgr.screening.services import load_instruments
from casemgr.security_headers import add_security_headers
from casemgr.settings import Settings
from casemgr.students.controllers import StudentController
from casemgr.web import WebPlugin

log = logging.getLogger("casemgr")


@get("/health", exclude_from_auth=True, include_in_schema=True, tags=["service"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _missing_schema_page(response: Response[Any]) -> Response[Any]:
    """Litestar answers unknown /schema/* paths with an HTML page; answer like everywhere else."""
    return problem(404, "Not Found") if response.status_code == 404 else response


async def _seal_once(app: Litestar) -> None:
    """Seal the chain's tip; a refusal or a failure is logged by its type only.

    A refusal (``audit.CheckpointRefused``) means the chain no longer extends the last
    trusted checkpoint: nothing is signed, and ``casemgr audit verify`` says where.
    """
    try:
        await audit.seal(app.state.sessions, app.state.crypto.keyring, app.state.settings)
    except Exception as exc:  # keep sealing later; verification will show any gap
        log.error("audit checkpoint failed: %s", type(exc).__name__)


async def _checkpoint_loop(app: Litestar) -> None:
    settings: Settings = app.state.settings
    while True:
        # Seal at start-up first: a checkpoint that a crash cut off between its file line
        # and its database row is restored now, not an interval later (until then
        # verification reports the file and the database at odds).
        await _seal_once(app)
        await asyncio.sleep(settings.checkpoint_interval_seconds)


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    task = None
    if settings.checkpoint_interval_seconds > 0:
        task = asyncio.create_task(_checkpoint_loop(app))
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if settings.checkpoint_interval_seconds > 0:
            # Seal what this process appended, so a restart leaves nothing unsealed.
            await _seal_once(app)
        await app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    keyring = KeyRing(settings.keys_dir)  # refuses unsafe key files before serving anything
    engine = create_engine(settings.database_url)
    passwords.configure(settings.password_hash_workers)
    # Operations (issue 11): metrics, the shred log of erasures (casemgr.backup).
    metrics = Metrics(engine)
    audit.appender_for(engine).observer = metrics.observe_audit
    shred_log = ShredLog(settings.shred_log_file) if settings.shred_log_file else None
    state: dict[str, Any] = {
        "settings": settings,
        "engine": engine,
        "sessions": create_sessionmaker(engine),
        "crypto": Crypto(keyring, on_shred=shred_log.append_one if shred_log else None),
        "metrics": metrics,
        "metrics_token_digest": read_metrics_token(settings.metrics_token_file),
        "authorizer": Authorizer(),
        # Psychological screening (issue 8): built-in and local instrument definitions.
        "instruments": load_instruments(settings),
    }
    app = Litestar(
        route_handlers=[
            health,
            # Readiness: the database answers (issue 11).
            ready,
            # Prometheus metrics, for the monitoring system only (issue 11).
            metrics_route,
            AuthController,
            StudentController,
            AuditController,
            # School administration and onboarding (issue 6)
            MeController,
            UserController,
            SchoolController,
            TransferController,
            # Care programme and its aggregate report (issue 7)
            *CARE_CONTROLLERS,
            ReportController,
            # Psychological screening (issue 8)
            ScreeningController,
        ],
        dependencies={
            "db_session": Provide(provide_db_session),
            "principal": Provide(provide_principal),
            "ctx": Provide(provide_context, sync_to_thread=False),
            "sessions": Provide(provide_sessions, sync_to_thread=False),
            "crypto": Provide(provide_crypto, sync_to_thread=False),
            "authorizer": Provide(provide_authorizer, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[InputGuard()],
        request_max_body_size=JSON_MAX_BODY_BYTES,
        before_send=[add_security_headers],
        lifespan=[_lifespan],
        # The web UI (pages, static files): casemgr.web.
        plugins=[WebPlugin()],
        state=State(state),
        openapi_config=OpenAPIConfig(
            title="casemgr",
            version="1",
            description="Case management for students in a school care programme (SPEC §6).",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
            # The document only (/schema/openapi.json, and /schema itself): Litestar's
            # documentation pages load their scripts from a CDN, which the CSP forbids.
            # Completed with problem answers, uploads and public operations: casemgr.openapi.
            render_plugins=[ContractDocument()],
            openapi_router=Router(
                "/schema",
                route_handlers=[],
                include_in_schema=False,
                after_request=_missing_schema_page,
            ),
        ),
        debug=False,
    )
    # Litestar's own middleware runs after routing; the client address and scheme must be
    # settled before anything (404s and the HSTS header included) reads them.
    app.asgi_handler = ForwardedHeaders(app.asgi_handler, settings.trusted_proxies)
    # Request ids, the access log and request metrics around all of it (issue 11).
    app.asgi_handler = RequestTelemetry(app.asgi_handler, metrics, settings.trusted_proxies)
    return app
