"""Issue 5: look-alike usernames (finding 7), password rules (ASVS: common passwords, 1,024
characters refused rather than cut), token idle timeout, and the order of login checks."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import argon2
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr import clock
from casemgr.accounts import passwords, services
from casemgr.accounts.policy import normalise_username, password_problem, username_problem
from casemgr.app import create_app
from casemgr.authz import Role
from casemgr.crypto import FieldCipher
from casemgr.errors import InvalidInput
from tests.accounts.helpers import login
from tests.factories import PASSWORD


@pytest.fixture
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8192)

    async def hash_password(password: str) -> str:
        return cheap.hash(password)

    monkeypatch.setattr(passwords, "hash_password", hash_password)


def create(db: Any, world: Any, username: str, password: str = PASSWORD) -> Any:
    async def body(session: AsyncSession) -> Any:
        return await services.create_user(
            session,
            db.crypto,
            username=username,
            password=password,
            role=Role.TEACHER,
            school_id=world.school_a,
        )

    return db.in_transaction(body)


@pytest.mark.parametrize(
    ("typed", "folded"),
    [
        ("DEMO.Teacher", "demo.teacher"),
        ("ｄｅｍｏ．ｔｅａｃｈｅｒ", "demo.teacher"),  # fullwidth, as Chinese IMEs type it
        ("  demo.teacher ", "demo.teacher"),
    ],
)
def test_usernames_fold_to_one_spelling(typed, folded):
    assert normalise_username(typed) == folded
    assert username_problem(normalise_username(typed)) is None


@pytest.mark.parametrize(
    "bad",
    ["dеmo.teacher", "de", "x" * 65, "demo teacher", "demo\u200dteacher", "王老师", "demo@x"],
    ids=["cyrillic-e", "short", "long", "space", "zwj", "chinese", "at-sign"],
)
def test_look_alikes_and_odd_names_are_refused(bad):
    assert username_problem(normalise_username(bad)) is not None


def test_a_look_alike_of_an_existing_account_is_taken(fast_hashing, world, db):
    create(db, world, "demo.teacher")
    for look_alike in ("DEMO.Teacher", "ｄｅｍｏ．ｔｅａｃｈｅｒ", "Demo.Teacher "):
        with pytest.raises(services.Conflict):
            create(db, world, look_alike)
    with pytest.raises(InvalidInput) as caught:
        create(db, world, "dеmo.teacher")  # Cyrillic е
    assert caught.value.extra["errors"][0]["field"] == "username"
    names = [row[0] for row in db.execute("SELECT username FROM users")]
    assert names.count("demo.teacher") == 1


def test_login_folds_the_typed_name_the_same_way(client, world):
    assert login(client, "CT_A1").status_code == 200
    assert login(client, "ｃｔ＿ａ１").status_code == 200


def test_cli_applies_the_username_rule(settings, world, db):
    from casemgr.cli import main

    env = {
        "CASEMGR_DATABASE_URL": settings.database_url,
        "CASEMGR_KEYS_DIR": str(settings.keys_dir),
        "CASEMGR_VAR_DIR": str(settings.var_dir),
        "CASEMGR_AUDIT_CHECKPOINT_FILE": str(settings.checkpoint_file),
    }
    args = ["user", "add", "--role", "teacher", "--school-id", str(world.school_a)]
    result = CliRunner().invoke(
        main, [*args, "--username", "CT_A1", "--password-stdin"], input=PASSWORD + "\n", env=env
    )
    assert result.exit_code == 2
    assert "taken" in result.output
    result = CliRunner().invoke(
        main,
        [*args, "--username", "Ｎｅｗ.Teacher", "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert [r[0] for r in db.execute("SELECT username FROM users WHERE username = 'new.teacher'")]


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 12"),
        ("password123456", "guess"),
        ("1qaz2wsx3edc4rfv", "guess"),
        ("qwertyuiopasdf", "guess"),
        ("woaini1314520", "guess"),
        ("x" * 1025, "at most 1024"),
    ],
)
def test_weak_or_overlong_passwords_are_refused_with_a_reason(password, why):
    problem = password_problem(password, "someone")
    assert problem is not None and why in problem


def test_a_password_containing_the_username_is_weak():
    assert password_problem("ct_a1ct_a1ct_a1", "ct_a1") is not None
    assert password_problem("gentle lantern orbit 42 maple", "ct_a1") is None


def test_account_creation_refuses_a_common_password_with_422(fast_hashing, world, db):
    with pytest.raises(InvalidInput) as caught:
        create(db, world, "weak.one", "password123456")
    (error,) = caught.value.extra["errors"]
    assert error["field"] == "password"
    assert "guess" in error["message"]


def test_login_refuses_an_overlong_password_instead_of_cutting_it(client, world):
    r = client.post("/api/v1/auth/login", json={"username": "ct_a1", "password": "y" * 1025})
    assert r.status_code == 422
    assert "password" in r.json()["detail"]
    assert "y" * 20 not in r.text


def test_idle_tokens_die_before_they_expire(settings, world, db):
    idle = dataclasses.replace(settings, token_idle_seconds=600)
    with TestClient(create_app(idle), raise_server_exceptions=False) as client:
        token = login(client, "ct_a1").json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        roster = f"/api/v1/classes/{world.class_a1}/students"
        assert client.get(roster, headers=headers).status_code == 200
        # Use keeps it alive...
        clock.set_offset(timedelta(seconds=500))
        assert client.get(roster, headers=headers).status_code == 200
        clock.set_offset(timedelta(seconds=1000))
        assert client.get(roster, headers=headers).status_code == 200
        # ...ten idle minutes end it, though its lifetime has hours left.
        clock.set_offset(timedelta(seconds=1601))
        assert client.get(roster, headers=headers).status_code == 401


def test_the_totp_secret_is_opened_only_after_the_password_matched(client, world, monkeypatch):
    opened: list[str] = []
    real_open = FieldCipher.open

    def spying_open(self: FieldCipher, table: str, column: str, *args: Any) -> str:
        opened.append(f"{table}.{column}")
        return real_open(self, table, column, *args)

    monkeypatch.setattr(FieldCipher, "open", spying_open)
    assert login(client, "counselor_a", "not the password at all", "123456").status_code == 401
    assert "users.totp_secret" not in opened
    counselor = world["counselor_a"]
    assert login(client, "counselor_a", PASSWORD, counselor.totp_now()).status_code == 200
    assert "users.totp_secret" in opened
