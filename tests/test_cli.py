"""The casemgr command line (SPEC §5): one JSON line on stdout per command."""

from __future__ import annotations

import json
import stat
import uuid

import pyotp
import pytest
from click.testing import CliRunner

from casemgr.cli import main


@pytest.fixture
def cli(settings, tmp_path):
    env = {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(tmp_path / "var"),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
    }

    def invoke(*args: str, input: str | None = None, expect: int = 0, **extra_env: str):
        result = CliRunner().invoke(main, list(args), env={**env, **extra_env}, input=input)
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    return invoke


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_init_creates_private_keys_and_is_idempotent(cli, tmp_path):
    keys = tmp_path / "fresh-keys"
    first = last_json(cli("init", CASEMGR_KEYS_DIR=str(keys)))
    assert set(first["keys_created"]) == {"kek-0001.key", "blind-index.key", "audit-signing.key"}
    for path in keys.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    contents = {p.name: p.read_bytes() for p in keys.iterdir()}
    second = last_json(cli("init", CASEMGR_KEYS_DIR=str(keys)))
    assert second["keys_created"] == []
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == contents


def test_init_migrates_an_empty_sqlite_database(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'var' / 'new.db'}"
    last_json(cli("init", CASEMGR_DATABASE_URL=url))
    assert (tmp_path / "var" / "new.db").exists()
    school = last_json(
        cli("school", "add", "--name", "一中", "--code", "YZ", CASEMGR_DATABASE_URL=url)
    )
    uuid.UUID(school["id"])


def test_school_class_and_user_add(cli, db):
    school_id = last_json(cli("school", "add", "--name", "第一中学", "--code", "S-001"))["id"]
    class_id = last_json(
        cli(
            "class",
            "add",
            "--school-id",
            school_id,
            "--name",
            "初一(1)班",
            "--grade",
            "7",
            "--school-year",
            "2026-2027",
        )
    )["id"]
    teacher = last_json(
        cli(
            "user",
            "add",
            "--username",
            "wang.ct",
            "--role",
            "class_teacher",
            "--school-id",
            school_id,
            "--class-id",
            class_id,
            "--password-stdin",
            input="a long enough password\n",
        )
    )
    assert teacher["totp_secret"] is None
    counselor = last_json(
        cli(
            "user",
            "add",
            "--username",
            "li.counselor",
            "--role",
            "counselor",
            "--school-id",
            school_id,
            "--password-stdin",
            input="another long password\n",
        )
    )
    assert len(counselor["totp_secret"]) >= 16
    auditor = last_json(
        cli(
            "user",
            "add",
            "--username",
            "zhao.audit",
            "--role",
            "auditor",
            "--password-stdin",
            input="auditor password 1\n",
        )
    )
    assert auditor["totp_secret"]
    rows = db.execute("SELECT username FROM users ORDER BY username")
    assert [r[0] for r in rows] == ["li.counselor", "wang.ct", "zhao.audit"]
    actions = [r[0] for r in db.execute("SELECT action FROM audit_events ORDER BY seq")]
    assert actions == ["school:create", "class:create", "user:create", "user:create", "user:create"]


SOMEWHERE = uuid.UUID("00000000-0000-4000-8000-0000000005e1")  # a school id nobody has


@pytest.mark.parametrize(
    "command",
    [
        f"class add --school-id {SOMEWHERE} --name x --grade 7 --school-year 2026-2027",
        f"class add --school-id {SOMEWHERE} --name x --grade 7 --school-year 2026",
        "user add --username u1 --role teacher --password-stdin",
        f"user add --username u2 --role auditor --school-id {SOMEWHERE} --password-stdin",
    ],
)
def test_bad_input_exits_2_with_a_message_and_changes_nothing(cli, db, command):
    before = db.execute("SELECT count(*) FROM audit_events")[0][0]
    result = cli(*command.split(), input="a long enough password\n", expect=2)
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr
    assert db.execute("SELECT count(*) FROM audit_events")[0][0] == before


def test_short_password_is_refused(cli):
    school_id = last_json(cli("school", "add", "--name", "二中", "--code", "S-002"))["id"]
    result = cli(
        "user",
        "add",
        "--username",
        "short",
        "--role",
        "teacher",
        "--school-id",
        school_id,
        "--password-stdin",
        input="short\n",
        expect=2,
    )
    assert "password" in result.stderr


def test_demo_prints_logins_that_work(cli, app, db):
    from litestar.testing import TestClient

    logins = last_json(cli("demo"))["logins"]
    assert sorted(login["role"] for login in logins) == sorted(
        ["class_teacher", "teacher", "counselor", "school_leader", "bureau_admin", "auditor"]
    )
    by_role = {login["role"]: login for login in logins}
    with TestClient(app) as client:
        teacher = by_role["class_teacher"]
        response = client.post(
            "/api/v1/auth/login",
            json={"username": teacher["username"], "password": teacher["password"]},
        )
        assert response.status_code == 200, response.text
        token = response.json()["token"]
        school_class = db.execute("SELECT class_id FROM class_assignments")[0][0]
        roster = client.get(
            f"/api/v1/classes/{uuid.UUID(str(school_class))}/students",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert roster.status_code == 200
        assert len(roster.json()["items"]) > 0
        auditor = by_role["auditor"]
        response = client.post(
            "/api/v1/auth/login",
            json={
                "username": auditor["username"],
                "password": auditor["password"],
                "totp": pyotp.TOTP(auditor["totp_secret"]).now(),
            },
        )
        assert response.status_code == 200, response.text
    # The demo fills only an empty database.
    cli("demo", expect=2)
    cli("demo", "--if-empty")


def test_demo_names_are_visibly_synthetic(cli, app):
    from litestar.testing import TestClient

    logins = {login["role"]: login for login in last_json(cli("demo"))["logins"]}
    with TestClient(app) as client:
        leader = logins["school_leader"]
        token = client.post(
            "/api/v1/auth/login",
            json={
                "username": leader["username"],
                "password": leader["password"],
                "totp": pyotp.TOTP(leader["totp_secret"]).now(),
            },
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        me_school = client.post(
            "/api/v1/students/lookup", json={"student_no": "D20260001"}, headers=headers
        )
        assert me_school.status_code == 200
        items = me_school.json()["items"]
        assert items and all("示例" in item["full_name"] for item in items)


def checkpoint_seqs(db):
    return [row[0] for row in db.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")]


def audit_head(db):
    return db.execute("SELECT last_seq FROM audit_head")[0][0]


def test_audit_verify_and_checkpoint_commands(cli, db):
    from tests.audit.helpers import append_events

    cli("school", "add", "--name", "三中", "--code", "S-003")
    assert checkpoint_seqs(db) == [1]  # the command sealed its own event
    assert last_json(cli("audit", "checkpoint")) == {"seq": None}
    append_events(db, 2)  # what the service appends between its checkpoints
    assert last_json(cli("audit", "checkpoint")) == {"seq": 3}
    verified = cli("audit", "verify")
    assert last_json(verified) == {"ok": True, "checked": 3, "first_bad_seq": None}
    # The verification is audited, and sealed like any command's work.
    assert checkpoint_seqs(db) == [1, 3, 4]


def test_every_command_that_appends_seals_the_chain_when_it_ends(cli, db, settings, tmp_path):
    school_id = last_json(cli("school", "add", "--name", "四中", "--code", "S-004"))["id"]
    assert checkpoint_seqs(db) == [audit_head(db)] == [1]
    cli("class", "add", "--school-id", school_id, "--name", "1班", "--grade", "7",
        "--school-year", "2026-2027")  # fmt: skip
    cli("user", "add", "--username", "sun.t", "--role", "teacher", "--school-id", school_id,
        "--password-stdin", input="a long enough password\n")  # fmt: skip
    assert checkpoint_seqs(db) == [1, 2, 3] and audit_head(db) == 3
    cli("keys", "status")  # appends nothing, so seals nothing
    assert checkpoint_seqs(db) == [1, 2, 3]
    # init seals the key ring's creation in a fresh installation.
    fresh = tmp_path / "fresh"
    env = {
        "CASEMGR_DATABASE_URL": f"sqlite:///{fresh / 'casemgr.db'}",
        "CASEMGR_KEYS_DIR": str(fresh / "keys"),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(fresh / "checkpoints.jsonl"),
    }
    cli("init", **env)
    [line] = (fresh / "checkpoints.jsonl").read_text().splitlines()
    assert json.loads(line)["seq"] == 1
    assert last_json(cli("audit", "verify", **env))["ok"] is True


def test_a_command_warns_but_succeeds_when_its_events_cannot_be_sealed(cli, db, settings):
    cli("school", "add", "--name", "五中", "--code", "S-005")
    settings.checkpoint_file.unlink()  # the anchors no longer agree: sealing is refused
    result = cli("school", "add", "--name", "六中", "--code", "S-006")
    uuid.UUID(last_json(result)["id"])
    message = " ".join(result.stderr.split())
    assert "warning: the audit chain was not sealed:" in message
    assert "is missing, but the database holds 1 checkpoints" in message
    assert checkpoint_seqs(db) == [1]


def test_audit_verify_trusts_only_the_public_key_it_is_given(cli, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    cli("school", "add", "--name", "七中", "--code", "S-007")
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    result = cli("audit", "verify", "--public-key", str(other), expect=1)
    assert last_json(result) == {
        "ok": False,
        "checked": 1,
        "first_bad_seq": 1,
        "reason": "checkpoint at 1 has a bad signature or an untrusted key",
    }
    assert "audit trail damaged" in result.stderr
    missing = cli("audit", "verify", "--public-key", str(tmp_path / "absent.pub"), expect=2)
    assert "cannot read the audit public key file" in " ".join(missing.stderr.split())


def test_keys_status_reports_versions(cli):
    status = last_json(cli("keys", "status"))
    assert status["current_version"] == 1
    assert status["versions_on_disk"] == [1]
    assert status["rotation_in_progress"] is None


def test_init_creates_the_sqlite_file_owner_only(cli, tmp_path):
    path = tmp_path / "private" / "casemgr.db"
    cli("init", CASEMGR_DATABASE_URL=f"sqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- serve and error printing (issue 5, findings 2 and 12) ------------------------------


@pytest.fixture
def uvicorn_calls(monkeypatch) -> list[dict]:
    """``uvicorn.run`` replaced by a recorder: serve's arguments, without serving."""
    calls: list[dict] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append(kwargs))
    return calls


def test_serve_never_lets_uvicorn_trust_forwarded_headers(cli, uvicorn_calls):
    cli("serve", "--host", "::1", "--port", "8443")
    [kwargs] = uvicorn_calls
    assert kwargs["host"] == "::1"
    assert kwargs["port"] == 8443
    assert kwargs["proxy_headers"] is False


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--port", "99999"], "'--port': 99999 is not in the range 1<=x<=65535"),
        (["--port", "0"], "'--port': 0 is not in the range"),
        (["--port", "http"], "'--port': 'http' is not a valid integer"),
        (["--host", "bad host!"], "'--host': 'bad host!' is neither an IP address nor a host"),
        (["--host", "-leading.example"], "'--host'"),
        (["--host", "a" * 64 + ".example"], "'--host'"),
    ],
)
def test_serve_refuses_a_bad_host_or_port_clearly(cli, uvicorn_calls, args, complaint):
    result = cli("serve", *args, expect=2)
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr
    assert uvicorn_calls == []


def test_serve_takes_host_names_and_addresses(cli, uvicorn_calls):
    for host in ("localhost", "casemgr.example.org", "127.0.0.1", "2001:DB8::1", "casemgr."):
        cli("serve", "--host", host)
    assert [call["host"] for call in uvicorn_calls] == [
        "localhost",
        "casemgr.example.org",
        "127.0.0.1",
        "2001:db8::1",
        "casemgr.",
    ]


def test_each_error_prints_once(cli):
    # Three refused fields at once: InvalidInput's detail joins them, and the CLI used to
    # print that detail and then the same list again.
    result = cli(
        "user",
        "add",
        "--username",
        "X",
        "--role",
        "teacher",
        "--password-stdin",
        input="short\n",
        expect=2,
    )
    assert result.stderr.count("error:") == 1
    for field in ("username:", "password:", "school_id:"):
        assert result.stderr.count(field) == 1, (field, result.stderr)


def test_error_messages_print_as_written(cli, tmp_path):
    # Rich markup in a message (here, a path) is text, not styling to interpret or choke on.
    keys = tmp_path / "no[bold]such[/bold]"
    result = cli("keys", "status", CASEMGR_KEYS_DIR=str(keys), expect=2)
    assert str(keys) in result.stderr
    assert result.stderr.count("error:") == 1
