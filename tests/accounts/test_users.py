"""Creating accounts: second factors, separation of duties, and ``casemgr user add``."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import argon2
import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.accounts import passwords, services
from casemgr.accounts.models import ClassAssignment, RoleGrant, User
from casemgr.authz import BUREAU_ROLES, Role
from casemgr.cli import main as cli
from casemgr.errors import InvalidInput
from tests.factories import PASSWORD

NEEDS_TOTP = {Role.COUNSELOR, Role.SCHOOL_LEADER, Role.BUREAU_ADMIN, Role.AUDITOR}


@pytest.fixture
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about accounts, not hashing cost: use a cheap hasher."""
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8192)

    async def hash_password(password: str) -> str:
        return cheap.hash(password)

    monkeypatch.setattr(passwords, "hash_password", hash_password)


async def _create(
    session: AsyncSession, db: Any, world: Any, username: str, role: Role
) -> services.NewUser:
    return await services.create_user(
        session,
        db.crypto,
        username=username,
        password=PASSWORD,
        role=role,
        school_id=None if role in BUREAU_ROLES else world.school_a,
        class_ids=[world.class_a1] if role is Role.CLASS_TEACHER else [],
    )


def test_totp_secret_for_the_roles_spec_names_and_stored_sealed(fast_hashing, world, db):
    async def body(session: AsyncSession) -> dict[Role, tuple[services.NewUser, User]]:
        out = {}
        for role in Role:
            created = await _create(session, db, world, f"new-{role.value}", role)
            user = await session.get(User, created.id)
            assert user is not None
            out[role] = (created, user)
        return out

    created = db.in_transaction(body)

    for role, (new_user, user) in created.items():
        if role not in NEEDS_TOTP:
            assert new_user.totp_secret is None, role
            assert user.totp_secret is None, role
            continue
        secret = new_user.totp_secret
        assert secret is not None, role
        raw = base64.b32decode(secret)
        assert len(raw) >= 16, role  # at least 128 bits
        assert pyotp.TOTP(secret).verify(pyotp.TOTP(secret).now())
        sealed = bytes(user.totp_secret or b"")
        assert sealed, role
        assert secret.encode() not in sealed, role
        assert raw not in sealed, role
    secrets = [c.totp_secret for c, _ in created.values() if c.totp_secret]
    assert len(set(secrets)) == len(secrets) == len(NEEDS_TOTP)


def test_totp_secret_column_holds_ciphertext_only(world, db):
    for name in ("counselor_a", "leader_a", "admin", "auditor"):
        secret = world[name].totp_secret
        (stored,) = db.execute("SELECT totp_secret FROM users WHERE username = :u", {"u": name})[0]
        stored = bytes(stored)
        assert secret.encode() not in stored
        assert base64.b32decode(secret) not in stored
    (stored,) = db.execute("SELECT totp_secret FROM users WHERE username = 'ct_a1'")[0]
    assert stored is None


def role_grants(db: Any, user_id: uuid.UUID) -> set[str]:
    async def body(session: AsyncSession) -> set[str]:
        return set(
            await session.scalars(select(RoleGrant.role).where(RoleGrant.user_id == user_id))
        )

    return db.in_transaction(body)


def test_auditor_and_content_role_never_share_an_account(world, db):
    holders = {
        Role.CLASS_TEACHER: "ct_a1",
        Role.TEACHER: "teacher_a",
        Role.COUNSELOR: "counselor_a",
        Role.SCHOOL_LEADER: "leader_a",
    }
    auditor = world["auditor"].id

    def grant(user_id: uuid.UUID, role: Role, school: Any) -> None:
        async def body(session: AsyncSession) -> None:
            await services.grant_role(session, db.crypto, user_id, role, school)

        db.in_transaction(body)

    for content_role, holder in holders.items():
        content_user = world[holder].id
        with pytest.raises(InvalidInput) as refused:
            grant(content_user, Role.AUDITOR, None)
        assert refused.value.extra["errors"][0]["field"] == "role"
        with pytest.raises(InvalidInput):
            grant(auditor, content_role, world.school_a)
        assert role_grants(db, content_user) == {content_role.value}
    assert role_grants(db, auditor) == {"auditor"}


def test_grant_role_lets_content_roles_combine(world, db):
    async def body(session: AsyncSession) -> str | None:
        return await services.grant_role(
            session, db.crypto, world["teacher_a"].id, Role.COUNSELOR, world.school_b
        )

    secret = db.in_transaction(body)
    assert role_grants(db, world["teacher_a"].id) == {"teacher", "counselor"}
    # A counselor needs a second factor: the teacher's account enrols one now.
    assert secret is not None and len(secret) >= 16
    stored = db.execute("SELECT totp_secret FROM users WHERE username = :u", {"u": "teacher_a"})[0][
        0
    ]
    assert stored is not None and secret.encode() not in bytes(stored)
    grants = db.execute("SELECT action, detail FROM audit_events WHERE action = 'user:grant_role'")
    assert [(a, d) for a, d in grants] == [("user:grant_role", '{"role":"counselor"}')]


def test_grant_of_a_role_the_account_already_has_a_factor_for_returns_no_secret(world, db):
    async def body(session: AsyncSession) -> str | None:
        return await services.grant_role(
            session, db.crypto, world["counselor_a"].id, Role.SCHOOL_LEADER, world.school_a
        )

    assert db.in_transaction(body) is None


def test_second_factor_role_without_enrolled_factor_cannot_log_in(world, db, client):
    from tests.factories import PASSWORD

    # An account with a second-factor role but no TOTP secret (made by hand, as a
    # database edit or an older import could) must not get in on its password alone.
    db.execute(
        "INSERT INTO role_grants (id, user_id, role, school_id) VALUES (:id, :u, 'counselor', :s)",
        {
            "id": db.id(uuid.uuid4()),
            "u": db.id(world["ct_a1"].id),
            "s": db.id(world.school_a),
        },
    )
    response = client.post("/api/v1/auth/login", json={"username": "ct_a1", "password": PASSWORD})
    assert response.status_code == 401
    reasons = db.execute(
        "SELECT detail FROM audit_events WHERE action = 'auth:login' ORDER BY seq DESC LIMIT 1"
    )
    assert reasons == [('{"reason":"second_factor_not_enrolled"}',)]


def test_grant_role_keeps_school_roles_in_a_school_and_bureau_roles_county_wide(world, db):
    teacher = world["teacher_a"].id

    def grant(role: Role, school: Any) -> InvalidInput:
        async def body(session: AsyncSession) -> None:
            await services.grant_role(session, db.crypto, teacher, role, school)

        with pytest.raises(InvalidInput) as refused:
            db.in_transaction(body)
        return refused.value

    # A school role with no school would reach every school.
    assert grant(Role.COUNSELOR, None).extra["errors"][0]["field"] == "school_id"
    assert grant(Role.BUREAU_ADMIN, world.school_a).extra["errors"][0]["field"] == "school_id"
    assert grant(Role.COUNSELOR, uuid.uuid4()).extra["errors"][0]["field"] == "school_id"
    assert role_grants(db, teacher) == {"teacher"}


def run_cli(settings: Any, args: list[str], password: str) -> Any:
    return CliRunner().invoke(
        cli,
        args,
        input=password + "\n",
        env={
            "CASEMGR_DATABASE_URL": settings.database_url,
            "CASEMGR_KEYS_DIR": str(settings.keys_dir),
            "CASEMGR_VAR_DIR": str(settings.var_dir),
        },
    )


def test_cli_user_add_prints_id_and_totp_secret(settings, world, db):
    result = run_cli(
        settings,
        [
            "user",
            "add",
            "--username",
            "cli-counselor",
            "--role",
            "counselor",
            "--school-id",
            str(world.school_a),
            "--password-stdin",
        ],
        "a long enough passphrase",
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert set(payload) == {"id", "totp_secret"}
    user_id = uuid.UUID(payload["id"])
    assert base64.b32decode(payload["totp_secret"])
    assert "a long enough passphrase" not in result.output
    assert role_grants(db, user_id) == {"counselor"}
    stored = db.execute("SELECT password_hash FROM users WHERE username = 'cli-counselor'")
    encoded = stored[0][0]
    assert argon2.PasswordHasher().verify(encoded, "a long enough passphrase")


def test_cli_user_add_class_teacher_with_classes(settings, world, db):
    result = run_cli(
        settings,
        [
            "user",
            "add",
            "--username",
            "cli-ct",
            "--role",
            "class_teacher",
            "--school-id",
            str(world.school_a),
            "--class-id",
            str(world.class_a1),
            "--class-id",
            str(world.class_a2),
            "--password-stdin",
        ],
        "a long enough passphrase",
    )

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip())
    assert payload["totp_secret"] is None
    user_id = uuid.UUID(payload["id"])

    async def classes(session: AsyncSession) -> set[uuid.UUID]:
        return set(
            await session.scalars(
                select(ClassAssignment.class_id).where(ClassAssignment.user_id == user_id)
            )
        )

    assert db.in_transaction(classes) == {world.class_a1, world.class_a2}
    assert role_grants(db, user_id) == {"class_teacher"}


def test_cli_user_add_refuses_a_short_password(settings, world, db):
    users_before = db.execute("SELECT COUNT(*) FROM users")

    result = run_cli(
        settings,
        [
            "user",
            "add",
            "--username",
            "cli-short",
            "--role",
            "teacher",
            "--school-id",
            str(world.school_a),
            "--password-stdin",
        ],
        "short",
    )

    assert result.exit_code != 0
    assert result.stdout == ""
    assert "password" in result.stderr
    assert "at least 12 characters" in result.stderr
    assert "short\n" not in result.stderr
    assert db.execute("SELECT COUNT(*) FROM users") == users_before
