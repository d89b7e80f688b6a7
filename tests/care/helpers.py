"""Helpers for care programme tests: more staff, time travel, and one call per route."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import clock
from casemgr.accounts import passwords
from casemgr.accounts.services import create_user
from casemgr.audit.models import AuditEvent
from casemgr.authz import Role
from tests.factories import PASSWORD, Account, _password_hash, issue_token

TERM_START = datetime(2026, 9, 7, 1, 0, tzinfo=UTC)  # a Monday morning in Beijing
TODAY = TERM_START.date()


def add_staff(
    db: Any,
    world: Any,
    username: str,
    role: Role,
    school_id: uuid.UUID | None,
    class_ids: tuple[uuid.UUID, ...] = (),
) -> Account:
    """Another account in the world, with a token, like ``build_world`` makes them."""

    async def body(session: AsyncSession) -> Account:
        original = passwords.hash_password

        async def cached(password: str) -> str:
            return _password_hash() if password == PASSWORD else await original(password)

        passwords.hash_password = cached  # type: ignore[assignment]
        try:
            created = await create_user(
                session,
                db.crypto,
                username=username,
                password=PASSWORD,
                role=role,
                school_id=school_id,
                class_ids=class_ids,
            )
        finally:
            passwords.hash_password = original  # type: ignore[assignment]
        account = Account(created.id, username, role, created.totp_secret)
        account.token = await issue_token(session, created.id)
        return account

    account = db.in_transaction(body)
    world.accounts[username] = account
    return account


def travel(db: Any, world: Any, when: datetime | date) -> None:
    """Move the clock, and give everyone a fresh token (the old ones would have expired)."""
    if not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day, 1, 0, tzinfo=UTC)
    clock.freeze(when)

    async def body(session: AsyncSession) -> None:
        for account in world.accounts.values():
            account.token = await issue_token(session, account.id)

    db.in_transaction(body)


def audit_count(db: Any) -> int:
    async def body(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)

    return db.in_transaction(body)


def events(db: Any, action: str | None = None) -> list[AuditEvent]:
    async def body(session: AsyncSession) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.seq)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        return list(await session.scalars(query))

    return db.in_transaction(body)


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


class Care:
    """One method per route of the care programme; ``expect`` checks the status."""

    def __init__(self, client: Any, world: Any, db: Any) -> None:
        self.client = client
        self.world = world
        self.db = db

    def call(
        self, who: str, method: str, path: str, body: Any = None, expect: int | None = None
    ) -> Any:
        headers = self.world[who].headers
        response = self.client.request(
            method, path, headers=headers, json=body if body is not None else None
        )
        if expect is not None:
            assert response.status_code == expect, (who, method, path, response.text)
        return response

    def ok(self, who: str, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        return self.call(who, method, path, body, expect).json()

    def student(self, name: str) -> uuid.UUID:
        return self.world.students[name]

    # -- routes ---------------------------------------------------------------------------

    def add_category(
        self,
        who: str,
        student: str,
        category: str,
        *,
        since: str | None = None,
        details: str = "Recorded at the start of term.",
        review_on: str | None = None,
        expect: int | None = 201,
    ) -> Any:
        body: dict[str, Any] = {
            "category": category,
            "since": since or day(-30),
            "details": details,
        }
        if review_on is not None:
            body["review_on"] = review_on
        return self.call(
            who, "POST", f"/api/v1/students/{self.student(student)}/care-categories", body, expect
        )

    def open_case(
        self,
        who: str,
        student: str,
        reason: str = "Family asked for support.",
        expect: int | None = 201,
    ) -> Any:
        return self.call(
            who,
            "POST",
            "/api/v1/cases",
            {"student_id": str(self.student(student)), "reason": reason},
            expect,
        )

    def case(self, who: str, case_id: Any, expect: int = 200, query: str = "") -> Any:
        return self.call(who, "GET", f"/api/v1/cases/{case_id}{query}", expect=expect)

    def pair(
        self,
        who: str,
        case_id: Any,
        mentors: list[str],
        *,
        mode: str | None = None,
        lead: str | None = None,
        goals: str = "Weekly reading together; check homework.",
        starts_on: str | None = None,
        expect: int | None = 201,
    ) -> Any:
        ids = [str(self.world[m].id) for m in mentors]
        body: dict[str, Any] = {
            "mode": mode or ("one_to_one" if len(ids) == 1 else "many_to_one"),
            "mentor_ids": ids,
            "goals": goals,
            "starts_on": starts_on or day(0),
        }
        if lead is not None:
            body["lead_id"] = str(self.world[lead].id)
        elif len(ids) > 1:
            body["lead_id"] = ids[0]
        return self.call(who, "POST", f"/api/v1/cases/{case_id}/pairings", body, expect)

    def log(
        self,
        who: str,
        case_id: Any,
        *,
        kind: str = "conversation",
        notes: str = "Talked about the week.",
        occurred_on: str | None = None,
        follow_up_on: str | None = None,
        expect: int | None = 201,
    ) -> Any:
        body: dict[str, Any] = {
            "occurred_on": occurred_on or day(0),
            "kind": kind,
            "notes": notes,
        }
        if follow_up_on is not None:
            body["follow_up_on"] = follow_up_on
        return self.call(who, "POST", f"/api/v1/cases/{case_id}/support-logs", body, expect)

    def visit(
        self,
        who: str,
        student: str | uuid.UUID,
        *,
        participants: tuple[str, ...] = (),
        mode: str = "in_person",
        notes: str = "Met the grandmother at home.",
        visited_on: str | None = None,
        expect: int | None = 201,
    ) -> Any:
        student_id = self.student(student) if isinstance(student, str) else student
        body = {
            "visited_on": visited_on or day(0),
            "participant_ids": [str(self.world[p].id) for p in participants],
            "mode": mode,
            "notes": notes,
        }
        return self.call(who, "POST", f"/api/v1/students/{student_id}/home-visits", body, expect)

    def tasks(self, who: str) -> list[dict[str, Any]]:
        return self.ok(who, "GET", "/api/v1/me/tasks")["items"]
