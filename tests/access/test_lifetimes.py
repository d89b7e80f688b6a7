"""Access that ends: an emergency grant after 60 minutes (SPEC P6), every token and web
session of a disabled account at once (SPEC §6), on every route that reads a student."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from casemgr import clock
from tests.access.matrix import ALLOW, GRANT_HOLDERS, RULES, STUDENT, expected
from tests.access.requests import Cell, Fresh, builders
from tests.care.helpers import TERM_START
from tests.factories import issue_token
from tests.web.helpers import sign_in

READS = sorted(r for r, rule in RULES.items() if r.startswith("GET ") and rule.names == STUDENT)


def fresh_tokens(db: Any, world: Any) -> None:
    """New tokens for everyone (the world's expire an hour after it was built)."""

    async def body(session: Any) -> None:
        for account in world.accounts.values():
            account.token = await issue_token(session, account.id)

    db.in_transaction(body)


def outcomes(client: Any, db: Any, scene: Any, *, live: bool) -> list[str]:
    requests = builders(Fresh(client, db, scene))
    wrong = []
    for route in READS:
        for role in sorted(GRANT_HOLDERS):
            request = requests[route][0](Cell(scene, role, "emergency"))
            response = client.get(request.path, headers=scene.world[role].headers)
            want = expected(route, role, "emergency", grants_live=live)
            ok = (
                response.status_code in requests[route][1]
                if want == ALLOW
                else response.status_code == want
            )
            if not ok:
                wrong.append(f"{route} as {role}: {response.status_code}, expected {want}")
    return wrong


def test_an_emergency_grant_ends_after_sixty_minutes(client, db, scene):
    assert len(READS) >= 8
    # The grants were given at TERM_START; the clock is frozen there.
    assert outcomes(client, db, scene, live=True) == []
    clock.freeze(TERM_START + timedelta(minutes=59, seconds=59))
    fresh_tokens(db, scene.world)
    assert outcomes(client, db, scene, live=True) == []
    clock.freeze(TERM_START + timedelta(minutes=60))
    fresh_tokens(db, scene.world)
    assert outcomes(client, db, scene, live=False) == []
    # Out of reach again, the file answers like any file of another class: not found.
    case = scene.records["emergency"].case
    response = client.get(f"/api/v1/cases/{case}", headers=scene.world["teacher_a"].headers)
    assert response.status_code == 404
    # And every access under the grant was flagged for the auditors.
    flagged = db.execute(
        "SELECT count(*) FROM audit_events WHERE emergency = :t AND outcome = 'allow'",
        {"t": True},
    )[0][0]
    allowed = [  # the reads the grant alone allowed
        (r, who)
        for r in READS
        for who in GRANT_HOLDERS
        if expected(r, who, "emergency") == ALLOW
        and expected(r, who, "emergency", grants_live=False) != ALLOW
    ]
    assert len(allowed) >= 15
    assert flagged >= 2 * len(allowed)


def test_a_disabled_account_loses_every_token_and_session_at_once(client, db, scene):
    world = scene.world
    account = world["ct_a1"]
    spare = {"Authorization": f"Bearer {scene.spare_tokens['ct_a1']}"}
    sign_in(client, account)
    assert client.get("/my").status_code == 200
    requests = builders(Fresh(client, db, scene))
    paths = [requests[r][0](Cell(scene, "ct_a1", "own")).path for r in READS]
    paths += ["/api/v1/me", "/api/v1/cases", "/api/v1/me/tasks"]
    for headers in (account.headers, spare):
        assert client.get("/api/v1/me", headers=headers).status_code == 200

    disabled = client.post(f"/api/v1/users/{account.id}/disable", headers=world["leader_a"].headers)
    assert disabled.status_code == 204, disabled.text

    for headers in (account.headers, spare):
        for path in paths:
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, response.status_code)
            assert "测试学生" not in response.text and "ZQXSCENE" not in response.text
    page = client.get("/my", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/?next=")
    for path in ("/cases", f"/cases/{scene.records['own'].case}"):
        assert client.get(path, follow_redirects=False).status_code == 303
    login = client.post(
        "/api/v1/auth/login", json={"username": "ct_a1", "password": "correct horse battery staple"}
    )
    assert login.status_code == 401
