"""Settings: one frozen object read from the environment.

Settings hold paths into the key ring, never key bytes, so printing them is safe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def normalise_database_url(url: str) -> str:
    """Accept URLs as people write them and choose the async driver ourselves.

    ``sqlite:///x.db`` -> ``sqlite+aiosqlite:///x.db``; ``postgresql://`` and ``postgres://``
    -> ``postgresql+asyncpg://``. A URL that already names an async driver is kept as is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("database URL must look like sqlite:///path or postgresql://host/db")
    dialect, _, driver = scheme.partition("+")
    if dialect == "postgres":
        dialect = "postgresql"
    if dialect == "sqlite":
        if driver in ("", "pysqlite"):
            driver = "aiosqlite"
    elif dialect == "postgresql":
        if driver in ("", "psycopg2", "pg8000"):
            driver = "asyncpg"
    else:
        raise ValueError(f"unsupported database dialect {dialect!r}: use sqlite or postgresql")
    return f"{dialect}+{driver}://{rest}"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    keys_dir: Path
    var_dir: Path
    # Audit checkpoints are also written here, outside the database.
    checkpoint_file: Path
    token_ttl_seconds: int = 8 * 3600
    checkpoint_interval_seconds: int = 300
    login_max_failures_per_account: int = 5
    login_max_failures_per_client: int = 20
    login_failure_window_seconds: int = 15 * 60
    password_hash_workers: int = 2

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        var_dir = Path(source.get("CASEMGR_VAR_DIR", "var"))
        raw_url = source.get("CASEMGR_DATABASE_URL") or f"sqlite:///{var_dir / 'casemgr.db'}"
        keys_dir = Path(source.get("CASEMGR_KEYS_DIR", "keys"))
        checkpoint_file = Path(
            source.get("CASEMGR_AUDIT_CHECKPOINT_FILE", str(var_dir / "audit-checkpoints.jsonl"))
        )

        def num(name: str, default: int) -> int:
            raw = source.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError as exc:
                raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc

        return cls(
            database_url=normalise_database_url(raw_url),
            keys_dir=keys_dir,
            var_dir=var_dir,
            checkpoint_file=checkpoint_file,
            token_ttl_seconds=num("CASEMGR_TOKEN_TTL_SECONDS", 8 * 3600),
            checkpoint_interval_seconds=num("CASEMGR_AUDIT_CHECKPOINT_SECONDS", 300),
            login_max_failures_per_account=num("CASEMGR_LOGIN_MAX_FAILURES_PER_ACCOUNT", 5),
            login_max_failures_per_client=num("CASEMGR_LOGIN_MAX_FAILURES_PER_CLIENT", 20),
            login_failure_window_seconds=num("CASEMGR_LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60),
            password_hash_workers=num("CASEMGR_PASSWORD_HASH_WORKERS", 2),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def __repr__(self) -> str:
        # Passwords in database URLs stay out of logs and tracebacks.
        from sqlalchemy.engine import make_url

        safe_url = make_url(self.database_url).render_as_string(hide_password=True)
        return f"Settings(database_url={safe_url!r}, keys_dir={str(self.keys_dir)!r})"
