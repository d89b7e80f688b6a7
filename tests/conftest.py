"""Test infrastructure: every test gets its own database, built by the real migrations.

Database-backed tests run once on SQLite and once on PostgreSQL (when
CASEMGR_TEST_PG_URL names an admin connection; ``make test`` and ``.ci/run`` set it).
Each gets a fresh copy of a migrated template: a file copy on SQLite, ``CREATE DATABASE
... TEMPLATE`` on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casemgr.crypto import Crypto, KeyRing, create_key_ring
from casemgr.db import create_engine, create_sessionmaker
from casemgr.migrate import upgrade
from casemgr.settings import Settings

T = TypeVar("T")
PG_ADMIN_URL = os.environ.get("CASEMGR_TEST_PG_URL", "")
BACKENDS = ["sqlite", "postgresql"]


def _pg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _pg_sqlalchemy_url(database: str) -> str:
    return (
        make_url(_pg_dsn(PG_ADMIN_URL, database))
        .set(drivername="postgresql+asyncpg")
        .render_as_string(hide_password=False)
    )


async def _pg_admin(*statements: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(PG_ADMIN_URL))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _real_time_again() -> Iterator[None]:
    """Whatever a test does to the clock ends with it."""
    yield
    from casemgr import clock

    clock.reset()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if not PG_ADMIN_URL:
        pytest.skip("PostgreSQL not configured (CASEMGR_TEST_PG_URL is empty)")
    name = f"casemgr_tpl_{os.getpid()}"
    asyncio.run(
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    )
    asyncio.run(upgrade(_pg_sqlalchemy_url(name)))
    yield name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "casemgr.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template_name: str = request.getfixturevalue("pg_template")
    name = f"casemgr_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    yield _pg_sqlalchemy_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    create_key_ring(path)
    return path


@pytest.fixture
def settings(database_url: str, keys_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        keys_dir=keys_dir,
        var_dir=tmp_path / "var",
        checkpoint_file=tmp_path / "var" / "audit-checkpoints.jsonl",
        checkpoint_interval_seconds=0,
    )


class Db:
    """Runs coroutines against the test database, each in a fresh event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyring = KeyRing(settings.keys_dir)
        self.crypto = Crypto(self.keyring)

    @property
    def backend(self) -> str:
        return "sqlite" if self.settings.is_sqlite else "postgresql"

    def id(self, value: uuid.UUID) -> str:
        """A UUID as a raw SQL parameter (SQLite stores them as 32 hex digits)."""
        return value.hex if self.backend == "sqlite" else str(value)

    def run(self, body: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
        async def main() -> T:
            engine = create_engine(self.settings.database_url)
            try:
                return await body(create_sessionmaker(engine))
            finally:
                await engine.dispose()

        return asyncio.run(main())

    def in_transaction(self, body: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async def wrapped(sessions: async_sessionmaker[AsyncSession]) -> T:
            async with sessions() as session, session.begin():
                return await body(session)

        return self.run(wrapped)

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        from sqlalchemy import text

        async def body(session: AsyncSession) -> list[Any]:
            result = await session.execute(text(sql), params or {})
            return list(result.all()) if result.returns_rows else []

        return self.in_transaction(body)


@pytest.fixture
def db(settings: Settings) -> Db:
    return Db(settings)


@pytest.fixture
def app(settings: Settings) -> Any:
    from casemgr.app import create_app

    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from litestar.testing import TestClient

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def world(db: Db) -> Any:
    from tests.factories import build_world

    return build_world(db)
