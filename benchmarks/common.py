"""What every benchmark shares: scratch databases, settings, the machine, the results file.

A benchmark runs against a database of its own: a temporary SQLite file, or a PostgreSQL
database it creates (from the admin URL in ``CASEMGR_BENCH_PG_URL``) and drops afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench" / "results.json"
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Scratch:
    """A database and a key ring that exist for one benchmark."""

    backend: str
    database_url: str
    directory: Path

    @property
    def keys_dir(self) -> Path:
        return self.directory / "keys"

    def settings(self, **overrides: Any) -> Any:
        from casemgr.settings import Settings

        values: dict[str, Any] = {
            "database_url": self.database_url,
            "keys_dir": self.keys_dir,
            "var_dir": self.directory / "var",
            "checkpoint_file": self.directory / "var" / "audit-checkpoints.jsonl",
            "checkpoint_interval_seconds": 0,
        }
        values.update(overrides)
        return Settings(**values)


def _pg_url(admin_url: str, database: str, driver: str = "postgresql") -> str:
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername=driver, database=database)
    return url.render_as_string(hide_password=False)


async def _pg_admin(admin_url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_url(admin_url, "postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch(
    backend: str, pg_admin_url: str | None = None, *, migrate: bool = True
) -> Iterator[Scratch]:
    """A migrated, empty database with a fresh key ring; removed afterwards."""
    from casemgr.crypto import create_key_ring
    from casemgr.migrate import upgrade

    directory = Path(tempfile.mkdtemp(prefix=f"casemgr-bench-{backend}-"))
    name = None
    try:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{directory / 'casemgr.db'}"
        else:
            if not pg_admin_url:
                raise ValueError("PostgreSQL needs an admin URL (CASEMGR_BENCH_PG_URL)")
            name = f"casemgr_bench_{uuid.uuid4().hex[:10]}"
            asyncio.run(_pg_admin(pg_admin_url, f'CREATE DATABASE "{name}"'))
            url = _pg_url(pg_admin_url, name, "postgresql+asyncpg")
        create_key_ring(directory / "keys")
        if migrate:
            asyncio.run(upgrade(url))
        yield Scratch(backend, url, directory)
    finally:
        if name is not None:
            assert pg_admin_url is not None
            asyncio.run(_pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(directory, ignore_errors=True)


# -- figures -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    """Median, minimum and maximum of several runs."""
    return {
        "median": round(median(values), digits),
        "min": round(min(values), digits) if values else float("nan"),
        "max": round(max(values), digits) if values else float("nan"),
    }


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return float(sorted_values[index])


# -- the machine ---------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _postgres_version(pg_admin_url: str | None) -> str | None:
    if not pg_admin_url:
        return None

    async def ask() -> str:
        import asyncpg

        conn = await asyncpg.connect(_pg_url(pg_admin_url, "postgres"))
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except (OSError, ValueError):
        return None


def machine(pg_admin_url: str | None) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": _postgres_version(pg_admin_url),
        "git_commit": _git_commit(),
    }


def write_results(document: dict[str, Any], path: Path = RESULTS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def python() -> str:
    return sys.executable
