"""A ciphertext moved inside the database (another row, another column) does not open."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.crypto import DecryptionError
from casemgr.crypto.models import DataKey
from casemgr.students.models import Student
from tests.factories import student_payload

# world: a1_first is student n=1, a1_second n=2 (see tests.factories.build_world).
FIRST_NAME = student_payload(uuid.uuid4(), 1)["full_name"]
SECOND_NAME = student_payload(uuid.uuid4(), 2)["full_name"]


def copy_column(db: Any, *, source: uuid.UUID, target: uuid.UUID, src: str, dst: str) -> bytes:
    """Overwrite ``target.dst`` with the stored bytes of ``source.src``; return the original."""

    async def body(session: AsyncSession) -> bytes:
        moved = await session.scalar(select(getattr(Student, src)).where(Student.id == source))
        original = await session.scalar(select(getattr(Student, dst)).where(Student.id == target))
        await session.execute(update(Student).where(Student.id == target).values({dst: moved}))
        return bytes(original)

    return db.in_transaction(body)


def open_field(db: Any, student_id: uuid.UUID, column: str) -> str:
    """Read a field the way the services do: the row's own data key, its own place."""

    async def body(session: AsyncSession) -> str:
        student = await session.get(Student, student_id)
        assert student is not None
        cipher = await db.crypto.cipher(session, student.data_key_id)
        return cipher.open("students", column, student.id, getattr(student, column))

    return db.in_transaction(body)


def assert_internal_error_without_plaintext(response: Any, *secrets: str) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 500
    for secret in secrets:
        assert secret not in response.text


def test_ciphertext_copied_to_another_student_does_not_open(client: Any, db: Any, world: Any):
    first, second = world.students["a1_first"], world.students["a1_second"]
    ct = world["ct_a1"]
    assert open_field(db, first, "full_name") == FIRST_NAME  # control: readable before the move

    original = copy_column(db, source=second, target=first, src="full_name", dst="full_name")

    with pytest.raises(DecryptionError):
        open_field(db, first, "full_name")
    response = client.get(f"/api/v1/students/{first}", headers=ct.headers)
    assert_internal_error_without_plaintext(response, SECOND_NAME, FIRST_NAME)
    # The moved-from student is untouched.
    assert client.get(f"/api/v1/students/{second}", headers=ct.headers).json()["full_name"] == (
        SECOND_NAME
    )

    # Putting the original bytes back makes the row readable again: the failure was the move.
    db.in_transaction(
        lambda s: s.execute(update(Student).where(Student.id == first).values(full_name=original))
    )
    response = client.get(f"/api/v1/students/{first}", headers=ct.headers)
    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == FIRST_NAME


def test_ciphertext_and_wrapped_key_copied_together_still_do_not_open(db: Any, world: Any):
    """Copying the other student's wrapped data key along with the field does not help:
    a wrapped key is bound to its own data_keys row, and the field to its own student row."""
    first, second = world.students["a1_first"], world.students["a1_second"]

    async def body(session: AsyncSession) -> None:
        keys = {
            s.id: s.data_key_id
            for s in await session.scalars(select(Student).where(Student.id.in_([first, second])))
        }
        wrapped = await session.scalar(select(DataKey.wrapped).where(DataKey.id == keys[second]))
        await session.execute(
            update(DataKey).where(DataKey.id == keys[first]).values(wrapped=wrapped)
        )

    copy_column(db, source=second, target=first, src="full_name", dst="full_name")
    db.in_transaction(body)
    with pytest.raises(DecryptionError):
        open_field(db, first, "full_name")


@pytest.mark.parametrize(("src", "dst"), [("full_name", "address"), ("student_no", "full_name")])
def test_ciphertext_copied_to_another_column_of_the_same_row_does_not_open(
    client: Any, db: Any, world: Any, src: str, dst: str
):
    first = world.students["a1_first"]
    plaintext = open_field(db, first, src)
    copy_column(db, source=first, target=first, src=src, dst=dst)

    # Same row, same data key: only the column in the associated data differs.
    with pytest.raises(DecryptionError):
        open_field(db, first, dst)
    assert open_field(db, first, src) == plaintext
    response = client.get(f"/api/v1/students/{first}", headers=world["ct_a1"].headers)
    assert_internal_error_without_plaintext(response, plaintext)
