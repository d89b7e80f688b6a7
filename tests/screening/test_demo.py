"""``casemgr demo`` adds a screening round: consents, results, some awaiting review."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from casemgr.accounts.models import User
from tests.factories import issue_token


def test_the_demo_round_has_results_awaiting_review(db, client):
    from casemgr.demo import seed

    logins = db.run(lambda sessions: seed(sessions, db.crypto))
    usernames = {login["role"]: login["username"] for login in logins}

    async def token_of(session: Any, username: str) -> str:
        user_id = await session.scalar(select(User.id).where(User.username == username))
        return await issue_token(session, user_id)

    counselor = {
        "Authorization": "Bearer "
        + db.in_transaction(lambda s: token_of(s, usernames["counselor"]))
    }
    leader = {
        "Authorization": "Bearer "
        + db.in_transaction(lambda s: token_of(s, usernames["school_leader"]))
    }
    items = client.get("/api/v1/screening/review-queue", headers=counselor).json()["items"]
    assert items, "the demo counselor finds results to review"
    assert items[0]["flags"] == ["critical_item"]
    (demo_round,) = client.get("/api/v1/screening/rounds", headers=counselor).json()["items"]
    exact = client.get(
        f"/api/v1/screening/rounds/{demo_round['id']}/progress", headers=counselor
    ).json()
    assert exact["total"]["consents_recorded"] > exact["total"]["consents_granted"]
    assert exact["total"]["pending_review"] == len(items)
    suppressed = client.get(
        f"/api/v1/screening/rounds/{demo_round['id']}/progress", headers=leader
    ).json()
    assert suppressed["k"] == 10
    assert (
        suppressed["total"]["pending_review"] is None or suppressed["total"]["pending_review"] >= 10
    )
