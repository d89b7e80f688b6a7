"""The web UI (SPEC §7): server-rendered pages over the same services as the API.

``WebPlugin`` adds the pages and their static files to the application; everything about
the pages (sessions, CSRF, languages, templates, the PDF export) lives in this package.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.plugins import InitPluginProtocol
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"


def web_router() -> Router:
    from casemgr.web.deps import provide_web_principal
    from casemgr.web.errors import EXCEPTION_HANDLERS
    from casemgr.web.sessions import check_csrf, close_uploads
    from casemgr.web.views import PAGES

    return Router(
        "/",
        route_handlers=PAGES,
        # Pages name the reader "principal", so that ``ctx`` (casemgr.dependencies) is
        # built on the browser session exactly as it is on a bearer token for the API.
        dependencies={"principal": Provide(provide_web_principal)},
        guards=[check_csrf],
        exception_handlers=EXCEPTION_HANDLERS,
        after_response=close_uploads,
        include_in_schema=False,
    )


class WebPlugin(InitPluginProtocol):
    """Registers the pages and ``/static`` (the stylesheet and the vendored htmx)."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(
            [
                web_router(),
                create_static_files_router(
                    path="/static",
                    directories=[STATIC_DIR],
                    name="static",
                    include_in_schema=False,
                    send_as_attachment=False,
                ),
            ]
        )
        return app_config


__all__ = ["WebPlugin"]
