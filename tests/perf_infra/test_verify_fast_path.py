"""``verify_chain`` reads rows through the driver (``_raw_batches``; on SQLite, a thread of
its own with its own connection, ``_sqlite_walk``); it must reach the very verdicts the ORM
path reaches, on intact and on damaged chains alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.audit import checkpoints
from tests.audit.helpers import append_events, events, intrude, rebuild_from, set_event, verify

Damage = Callable[[Any], None]


def _walks(db: Any, *, split_at: int | None = None, apart: bool = False) -> tuple[Any, Any]:
    """The chain walked by the fast path and by the ORM path, from the start."""

    async def walk(session: AsyncSession, fast: bool) -> Any:
        if fast and apart:
            path = checkpoints._sqlite_file(await session.connection())
            assert path is not None
            found = await checkpoints._sqlite_walk(
                session,
                path,
                after=0,
                prev=checkpoints.GENESIS_HASH,
                until=None,
                wanted={5, 20, 33},
            )
            return (found.last_seq, found.last_hash, found.bad_seq, found.reason, found.seen)
        if fast:
            batches = await checkpoints._raw_batches(
                await session.connection(), 0, None, 7, split_at=split_at
            )
            assert batches is not None  # both test databases have a fast path
        else:
            batches = checkpoints._orm_batches(session, 0, None, 7)
        found = await checkpoints._check_batches(
            session, batches, after=0, prev=checkpoints.GENESIS_HASH, wanted={5, 20, 33}
        )
        return (found.last_seq, found.last_hash, found.bad_seq, found.reason, found.seen)

    async def both(session: AsyncSession) -> tuple[Any, Any]:
        return await walk(session, True), await walk(session, False)

    return db.in_transaction(both)


def _change_detail(db: Any) -> None:
    intrude(db, lambda s: set_event(s, 12, detail='{"n":99}'))


def _change_time(db: Any) -> None:
    at = events(db)[20]["at"]
    intrude(db, lambda s: set_event(s, 21, at=at.replace(microsecond=(at.microsecond + 1) % 10**6)))


def _odd_but_equal_uuid(db: Any) -> None:
    """The same actor id stored in another spelling: the value, and so the chain, holds."""
    if db.backend != "sqlite":
        pytest.skip("PostgreSQL stores a UUID in one form only")

    async def body(session: AsyncSession) -> None:
        await session.execute(
            text("UPDATE audit_events SET actor_id = upper(actor_id) WHERE seq = 17")
        )

    intrude(db, body)


def _delete_one(db: Any) -> None:
    async def body(session: AsyncSession) -> None:
        await session.execute(text("DELETE FROM audit_events WHERE seq = 26"))

    intrude(db, body)


def _rebuilt(db: Any) -> None:
    rebuild_from(db, 30, detail='{"n":-1}')


def _nothing(db: Any) -> None:
    return None


@pytest.mark.parametrize(
    "damage",
    [_nothing, _change_detail, _change_time, _odd_but_equal_uuid, _delete_one, _rebuilt],
)
@pytest.mark.parametrize("way", ["driver", "split", "apart"])
def test_fast_and_orm_paths_agree(db: Any, damage: Damage, way: str) -> None:
    if way == "apart" and db.backend != "sqlite":
        pytest.skip("the walk on a thread of its own reads SQLite files")
    append_events(db, 40)
    damage(db)
    fast, orm = _walks(db, split_at=20 if way == "split" else None, apart=way == "apart")
    assert fast == orm


def test_verify_chain_agrees_with_the_orm_path(
    db: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_events(db, 90)
    _change_detail(db)
    fast = verify(db, settings)

    async def no_fast_path(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(checkpoints, "_raw_batches", no_fast_path)
    monkeypatch.setattr(checkpoints, "_sqlite_file", lambda _connection: None)
    orm = verify(db, settings)
    assert (fast.ok, fast.checked, fast.first_bad_seq, fast.reason) == (
        orm.ok,
        orm.checked,
        orm.first_bad_seq,
        orm.reason,
    )
    assert fast.first_bad_seq == 12


# SQLite keeps whatever it is given in any column. A row altered on an offline copy with
# the triggers dropped may hold a blob where text belongs (which SQLite's JSON functions
# refuse outright) or a number where text belongs: verification must still name the event.
ODD_VALUES = {
    "detail-as-blob": "UPDATE audit_events SET detail = CAST(detail AS BLOB) WHERE seq = 14",
    "action-as-blob": "UPDATE audit_events SET action = CAST(action AS BLOB) WHERE seq = 14",
    "role-as-number": "UPDATE audit_events SET role = 7 WHERE seq = 14",
    "empty-detail-blob": "UPDATE audit_events SET detail = X'' WHERE seq = 14",
}


@pytest.mark.parametrize("change", ODD_VALUES, ids=list(ODD_VALUES))
@pytest.mark.parametrize("way", ["driver", "apart"])
def test_values_of_another_storage_class_are_named_not_a_crash(
    db: Any, settings: Any, change: str, way: str
) -> None:
    if db.backend != "sqlite":
        pytest.skip("PostgreSQL keeps a column's type")
    append_events(db, 30)
    intrude(db, lambda s: set_event(s, 12, detail='{"n":99}'))  # an ordinary change first

    async def odd(session: AsyncSession) -> None:
        await session.execute(text(ODD_VALUES[change]))

    intrude(db, odd)
    start = _hash_of(db, 12)

    async def walk(session: AsyncSession) -> Any:
        found = await checkpoints._walk(
            session,
            after=12,  # past the ordinary change: the odd row is the next bad one
            prev=start,
            wanted=frozenset(),
            batch_size=7,
            apart=way == "apart",
        )
        return found.bad_seq, found.reason

    assert db.in_transaction(walk) == (14, "event does not match the chain")
    result = verify(db, settings)
    assert (result.ok, result.first_bad_seq) == (False, 12)


def _hash_of(db: Any, seq: int) -> bytes:
    return bytes(db.execute("SELECT hash FROM audit_events WHERE seq = :s", {"s": seq})[0][0])
