"""``casemgr demo`` grows a living synthetic county: every login sees care work to do."""

from __future__ import annotations

from typing import Any

import pyotp

from casemgr.demo import seed


def login(client: Any, login: dict[str, Any]) -> dict[str, str]:
    body = {"username": login["username"], "password": login["password"]}
    if login["totp_secret"]:
        body["totp"] = pyotp.TOTP(login["totp_secret"]).now()
    response = client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_the_demo_county_is_alive_for_every_login(db, client):
    logins = {x["role"]: x for x in db.run(lambda sessions: seed(sessions, db.crypto))}
    assert db.execute("SELECT COUNT(*) FROM schools") == [(4,)]
    (students,) = db.execute("SELECT COUNT(*) FROM students")[0]
    assert students >= 300
    for table in ("case_files", "care_categories", "pairings", "support_logs", "home_visits"):
        (count,) = db.execute(f"SELECT COUNT(*) FROM {table}")[0]
        assert count >= 10, table

    teacher = login(client, logins["teacher"])
    cases = client.get("/api/v1/cases", headers=teacher).json()["items"]
    assert cases, "the demo teacher mentors some students"
    file = client.get(f"/api/v1/cases/{cases[0]['id']}", headers=teacher).json()
    assert file["pairings"] and file["care_categories"]
    assert client.get("/api/v1/me/tasks", headers=teacher).json()["items"]

    class_teacher = login(client, logins["class_teacher"])
    progress = client.get("/api/v1/me/visit-progress", headers=class_teacher).json()
    assert progress["items"] and progress["items"][0]["visits"] > 0
    assert client.get("/api/v1/me/tasks", headers=class_teacher).json()["items"]

    counselor = login(client, logins["counselor"])
    tasks = client.get("/api/v1/me/tasks", headers=counselor).json()["items"]
    assert "follow_up" in {t["kind"] for t in tasks}

    auditor = login(client, logins["auditor"])
    grants = client.get("/api/v1/audit/emergency-access", headers=auditor).json()["items"]
    assert len(grants) == 1 and grants[0]["reviewed_at"] is None

    admin = login(client, logins["bureau_admin"])
    county = client.get("/api/v1/reports/care-summary", headers=admin).json()
    assert county["school_id"] is None and len(county["cells"]) == 5
    leader = login(client, logins["school_leader"])
    school = client.get("/api/v1/reports/care-summary", headers=leader).json()
    assert school["school_id"] is not None
