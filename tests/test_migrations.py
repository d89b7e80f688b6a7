"""The schema comes from the migrations, and the models never drift from them."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from casemgr.db import create_engine
from casemgr.migrate import alembic_config, upgrade
from casemgr.models import Base


def _diff(database_url: str, metadata: MetaData) -> list:
    async def main() -> list:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_models_match_migrations(database_url):
    assert _diff(database_url, Base.metadata) == []


def test_drift_check_notices_a_table_missing_from_the_migrations(database_url):
    # The check above must be able to fail: a model the migrations never created shows up.
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    diff = _diff(database_url, metadata)
    assert [entry[0] for entry in diff] == ["add_table"]
    assert diff[0][1].name == "not_migrated"


def test_database_is_at_the_single_head(database_url):
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1

    async def current() -> str | None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
        finally:
            await engine.dispose()

    assert asyncio.run(current()) == heads[0]


def test_upgrade_is_idempotent_and_keeps_the_audit_head(database_url, db):
    asyncio.run(upgrade(database_url))
    assert db.execute("SELECT id, last_seq FROM audit_head") == [(1, 0)]

    async def tables() -> set[str]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    assert {"students", "audit_events", "data_keys", "users"} <= asyncio.run(tables())
