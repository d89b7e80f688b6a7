from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from casemgr import audit
from casemgr.audit import unusual
from casemgr.audit.services import EventFilter
from casemgr.authz import Permission, actor_of, require
from casemgr.dependencies import (
    AuthorizerDep,
    CryptoDep,
    Ctx,
    CurrentPrincipal,
    DbSession,
    SettingsDep,
)
from casemgr.errors import InvalidInput


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ("audit",)

    @get("/events")
    async def events(
        self,
        db_session: DbSession,
        authorizer: AuthorizerDep,
        principal: CurrentPrincipal,
        actor_id: FromQuery[uuid.UUID | None] = None,
        student_id: FromQuery[uuid.UUID | None] = None,
        action: FromQuery[str | None] = None,
        outcome: FromQuery[Literal["allow", "deny"] | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: FromQuery[int | None] = None,
    ) -> dict[str, Any]:
        decision = await require(
            db_session, authorizer, principal, Permission.AUDIT_READ, resource_type="audit"
        )
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidInput.field(name, "give a time zone, e.g. 2026-09-01T00:00:00Z")
        filters = EventFilter(actor_id, student_id, action, outcome, since, until)
        items, next_cursor = await audit.list_events(
            db_session, filters, limit=limit, before_seq=cursor
        )
        await audit.record(
            db_session,
            audit.Action.AUDIT_READ,
            actor=actor_of(principal, decision),
            resource_type="audit",
            detail={"count": len(items)},
        )
        return {"items": items, "next_cursor": next_cursor}

    @get("/verify")
    async def verify(
        self,
        db_session: DbSession,
        authorizer: AuthorizerDep,
        principal: CurrentPrincipal,
        crypto: CryptoDep,
        settings: SettingsDep,
    ) -> dict[str, Any]:
        decision = await require(
            db_session, authorizer, principal, Permission.AUDIT_VERIFY, resource_type="audit"
        )
        # The pinned public keys, never one derived from the private key.
        result = await audit.verify_chain(
            db_session,
            crypto.keyring.audit_public_keys,
            settings.checkpoint_file,
            seal_deadline=settings.seal_deadline,
        )
        await audit.record(
            db_session,
            audit.Action.AUDIT_VERIFY,
            actor=actor_of(principal, decision),
            resource_type="audit",
            detail={"ok": result.ok, "checked": result.checked},
        )
        return {"ok": result.ok, "checked": result.checked, "first_bad_seq": result.first_bad_seq}

    # -- unusual access for review (issue 11): casemgr.audit.unusual -----------------------

    @get("/unusual")
    async def unusual_access(
        self,
        ctx: Ctx,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        kind: FromQuery[unusual.Kind | None] = None,
        reviewed: FromQuery[bool | None] = None,
    ) -> unusual.FindingList:
        """Unusual access found in the trail (default: the last 7 days, and every
        emergency access not reviewed yet); pseudonymous ids and counts only."""
        return await unusual.list_unusual(
            ctx, since=since, until=until, kind=kind, reviewed=reviewed
        )

    @post("/unusual/{finding_id:str}/review", status_code=HTTP_200_OK)
    async def review_unusual_access(
        self, finding_id: FromPath[str], data: JSONBody[unusual.ReviewIn], ctx: Ctx
    ) -> unusual.Finding:
        """Mark a finding reviewed: ``{outcome}`` (``explained`` or ``follow_up``), or for
        an emergency access ``{note?}`` as ``/audit/emergency-access/{id}/review``."""
        return await unusual.review(ctx, finding_id, data)
