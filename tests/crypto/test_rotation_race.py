"""A data key created under the old KEK by a transaction still open when the rotation
reaches its end is waited for and rewrapped, not left behind (PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text

from casemgr.crypto.envelope import new_data_key, wrap_data_key
from casemgr.crypto.models import DataKey
from casemgr.crypto.rotation import rotate
from casemgr.db import create_engine, create_sessionmaker, new_id


def test_rotation_waits_for_a_writer_that_wrapped_under_the_old_key(db):
    if db.backend != "postgresql":
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE: no open writer to wait for")

    async def main() -> dict[int, int]:
        engine = create_engine(db.settings.database_url)
        sessions = create_sessionmaker(engine)
        try:
            async with sessions() as session, session.begin():
                for _ in range(5):
                    db.crypto.new_data_key(session, "student")
            # A writer that read the key ring before the rotation and is still open.
            writer = sessions()
            await writer.begin()
            stale_id = new_id()
            writer.add(
                DataKey(
                    id=stale_id,
                    purpose="student",
                    kek_version=1,
                    wrapped=wrap_data_key(db.keyring.kek(1), 1, stale_id, new_data_key()),
                )
            )
            await writer.flush()

            rotation = asyncio.create_task(rotate(sessions, db.keyring, batch_size=2))
            # Wait (bounded) until the rotation is queued behind the writer's table lock.
            async with engine.connect() as probe:
                for _ in range(500):
                    waiting = await probe.scalar(
                        text(
                            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                            "WHERE c.relname = 'data_keys' AND NOT l.granted"
                        )
                    )
                    if waiting:
                        break
                    assert not rotation.done(), "rotation finished without waiting for the writer"
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("rotation never waited for the open writer")
            await writer.commit()
            await writer.close()
            result = await rotation
            assert result.target_version == 2
            async with sessions() as session:
                rows = await session.execute(
                    select(DataKey.kek_version, func.count()).group_by(DataKey.kek_version)
                )
                return {int(v): int(n) for v, n in rows}
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == {2: 6}
