"""The composition root: ``create_app(settings)`` wires everything; nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from casemgr import audit
from casemgr.accounts import passwords
from casemgr.accounts.controllers import AuthController
from casemgr.audit.controllers import AuditController
from casemgr.authz import Authorizer
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
from casemgr.problems import EXCEPTION_HANDLERS
from casemgr.security_headers import add_security_headers
from casemgr.settings import Settings
from casemgr.students.controllers import StudentController

log = logging.getLogger("casemgr")


@get("/health", exclude_from_auth=True, include_in_schema=True, tags=["service"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _checkpoint_loop(app: Litestar) -> None:
    settings: Settings = app.state.settings
    while True:
        await asyncio.sleep(settings.checkpoint_interval_seconds)
        try:
            await audit.write_checkpoint(
                app.state.sessions,
                app.state.crypto.keyring.audit_signing_key,
                settings.checkpoint_file,
            )
        except Exception as exc:  # keep sealing later; verification will show any gap
            log.error("audit checkpoint failed: %s", type(exc).__name__)


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
            with contextlib.suppress(Exception):
                await audit.write_checkpoint(
                    app.state.sessions,
                    app.state.crypto.keyring.audit_signing_key,
                    settings.checkpoint_file,
                )
        await app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    keyring = KeyRing(settings.keys_dir)  # refuses unsafe key files before serving anything
    engine = create_engine(settings.database_url)
    passwords.configure(settings.password_hash_workers)
    state: dict[str, Any] = {
        "settings": settings,
        "engine": engine,
        "sessions": create_sessionmaker(engine),
        "crypto": Crypto(keyring),
        "authorizer": Authorizer(),
    }
    return Litestar(
        route_handlers=[health, AuthController, StudentController, AuditController],
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
        before_send=[add_security_headers],
        lifespan=[_lifespan],
        state=State(state),
        openapi_config=OpenAPIConfig(
            title="casemgr",
            version="1",
            description="Case management for students in a school care programme (SPEC §6).",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
