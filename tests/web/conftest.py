"""Fixtures for the page tests: records made through the real services, as a user would."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.accounts.services import resolve_token
from casemgr.authz import Authorizer
from casemgr.context import RequestContext
from tests.factories import Account

T = TypeVar("T")


def as_user(db: Any, account: Account, body: Callable[[RequestContext], Awaitable[T]]) -> T:
    """Run ``body`` with a request context of ``account`` (its bearer token), committed."""

    async def run(sessions: async_sessionmaker[AsyncSession]) -> T:
        # As a request does: one session, committed at the end (services may commit too).
        async with sessions() as session:
            principal = await resolve_token(session, account.token)
            assert principal is not None
            ctx = RequestContext(session, db.crypto, Authorizer(), principal, db.settings)
            result = await body(ctx)
            await session.commit()
            return result

    return db.run(run)


@pytest.fixture
def case_a1(db: Any, world: Any) -> uuid.UUID:
    """An open case file of student a1_first (class A1), opened by its class teacher."""
    from casemgr.care import services as care

    async def body(ctx: RequestContext) -> uuid.UUID:
        case = await care.open_case(ctx, world.students["a1_first"], "家访后建立档案")
        return case.id

    return as_user(db, world["ct_a1"], body)


@pytest.fixture
def screened_a1(client: Any, world: Any, db: Any) -> uuid.UUID:
    """A screening result of student a1_first waiting for a counselor's review."""
    from tests.screening.helpers import consent, create_round, result_ids, table, upload

    round_id = create_round(client, world, class_ids=[world.class_a1])
    assert consent(client, world, round_id, world.students["a1_first"]).status_code == 201
    answers: list[int | None] = [2, 2, 3, 2, 2, 2, 2, 2, 1]
    response = upload(client, world, round_id, table([("NO00001", answers)]))
    assert response.status_code == 200, response.text
    return result_ids(db, round_id)[world.students["a1_first"]]
