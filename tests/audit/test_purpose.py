"""Every event says why the access happened, from a controlled vocabulary (SPEC P4)."""

from __future__ import annotations

from casemgr import audit


def test_events_carry_a_purpose_that_follows_from_the_action(client, world, db):
    client.get(f"/api/v1/students/{world.students['a1_first']}", headers=world["ct_a1"].headers)
    client.get("/api/v1/audit/verify", headers=world["auditor"].headers)
    rows = db.execute("SELECT action, purpose FROM audit_events ORDER BY seq")
    purposes = dict(rows)
    assert purposes["school:create"] == "administration"
    assert purposes["user:create"] == "administration"
    assert purposes["student:create"] == "care_programme"
    assert purposes["student:read"] == "care_programme"
    assert purposes["audit:verify"] == "oversight"
    assert all(purpose for _, purpose in rows)


def test_a_caller_can_name_a_narrower_purpose(db):
    async def body(session):
        return await audit.record(
            session, "student:read", actor=None, resource_type="student", purpose="emergency"
        )

    seq = db.in_transaction(body)
    assert db.execute("SELECT purpose FROM audit_events WHERE seq = :s", {"s": seq}) == [
        ("emergency",)
    ]


def test_login_events_are_for_authentication(client, world, db):
    client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x" * 12})
    assert db.execute(
        "SELECT purpose FROM audit_events WHERE action = 'auth:login' ORDER BY seq DESC LIMIT 1"
    ) == [("authentication",)]
