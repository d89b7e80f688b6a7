"""Where a reader lands after signing in, by the role they hold."""

from __future__ import annotations

from litestar import Controller, get
from litestar.response import Redirect

from casemgr.dependencies import CurrentPrincipal
from casemgr.web.errors import redirect
from casemgr.web.render import landing_path


class HomePages(Controller):
    path = "/"
    include_in_schema = False

    @get("/home")
    async def home(self, principal: CurrentPrincipal) -> Redirect:
        return redirect(landing_path(principal))
