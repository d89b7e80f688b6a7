"""Settings come from the environment; database URLs are accepted as people write them."""

from __future__ import annotations

from pathlib import Path

import pytest

from casemgr.settings import Settings, normalise_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_get_the_async_driver(given, expected):
    assert normalise_database_url(given) == expected


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "var/x.db", ""])
def test_unsupported_database_urls_are_refused(bad):
    with pytest.raises(ValueError):
        normalise_database_url(bad)


def test_defaults_put_the_database_and_checkpoints_under_var():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///var/casemgr.db"
    assert settings.keys_dir == Path("keys")
    assert settings.checkpoint_file == Path("var/audit-checkpoints.jsonl")
    assert settings.is_sqlite


def test_environment_overrides():
    settings = Settings.from_env(
        {
            "CASEMGR_DATABASE_URL": "postgresql://app@db:5432/casemgr",
            "CASEMGR_KEYS_DIR": "/etc/casemgr/keys",
            "CASEMGR_VAR_DIR": "/srv/var",
            "CASEMGR_TOKEN_TTL_SECONDS": "600",
        }
    )
    assert settings.database_url == "postgresql+asyncpg://app@db:5432/casemgr"
    assert settings.keys_dir == Path("/etc/casemgr/keys")
    assert settings.checkpoint_file == Path("/srv/var/audit-checkpoints.jsonl")
    assert settings.token_ttl_seconds == 600
    assert not settings.is_sqlite


def test_a_non_numeric_setting_is_refused_with_its_name():
    with pytest.raises(ValueError, match="CASEMGR_TOKEN_TTL_SECONDS"):
        Settings.from_env({"CASEMGR_TOKEN_TTL_SECONDS": "eight hours"})


def test_repr_hides_the_database_password():
    settings = Settings.from_env({"CASEMGR_DATABASE_URL": "postgresql://app:s3cret-pw@db/casemgr"})
    assert "s3cret-pw" not in repr(settings)
    assert "s3cret-pw" not in str(settings)


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.keys_dir = Path("/tmp")  # type: ignore[misc]
