"""Acceptance 3 (SPEC P1): no personal value of a student appears in the raw stored bytes.

Students are written through the HTTP API with distinctive markers in every personal field,
then the raw SQLite files (database and write-ahead log) or a ``pg_dump`` of the PostgreSQL
database are scanned. Controls prove the scan sees the data: the plain school name, the
students' neutral codes and their ciphertexts are all found in the same bytes.
"""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from casemgr.students.models import Student
from tests.factories import national_id

PATCHED_ADDRESS = "ZQXMARKERPATCHEDADDRESS 编辑后的地址"

# Birth dates nothing else in the database holds (timestamps there carry times).
ASCII_BIRTH = date(2011, 2, 27)
CHINESE_BIRTH = date(2010, 11, 23)

ASCII_STUDENT: dict[str, Any] = {
    "full_name": "ZQXMARKERFULLNAME",
    "gender": "female",
    "birth_date": ASCII_BIRTH.isoformat(),
    "student_no": "ZQXMARKERSTUDENTNO",
    "national_id": national_id(ASCII_BIRTH, 731, region="320583"),
    "address": "ZQXMARKERADDRESS 17 Quayside",
    "guardians": [
        {"name": "ZQXMARKERGUARDIANNAME", "relation": "ZQXMARKERRELATION", "phone": "13975318642"},
        {
            "name": "ZQXMARKERSECONDGUARDIAN",
            "relation": "ZQXMARKERAUNT",
            "phone": "+86 15824681357",
        },
    ],
}
CHINESE_STUDENT: dict[str, Any] = {
    "full_name": "测试标记甲乙丙",
    "gender": "male",
    "birth_date": CHINESE_BIRTH.isoformat(),
    "student_no": "测试标记学号壬癸",
    "national_id": national_id(CHINESE_BIRTH, 468, region="510107"),
    "address": "测试标记地址丁戊巷九号",
    "guardians": [
        {"name": "测试标记家长己庚", "relation": "测试标记关系辛", "phone": "18697532410"}
    ],
}
STUDENTS = [ASCII_STUDENT, CHINESE_STUDENT]
# A searched-for value that matches nobody: a lookup must not store it either.
MISSED_LOOKUP = "ZQXMARKERLOOKUPMISS"


def markers(student: dict[str, Any]) -> list[str]:
    values = [student[k] for k in ("full_name", "student_no", "national_id", "address")]
    for guardian in student["guardians"]:
        values += [guardian["name"], guardian["relation"], guardian["phone"]]
    birth = date.fromisoformat(student["birth_date"])
    values += [birth.isoformat(), birth.strftime("%Y%m%d")]
    return values


ALL_MARKERS = [m for s in STUDENTS for m in markers(s)] + [MISSED_LOOKUP]


def write_students_through_the_api(client: Any, world: Any) -> list[dict[str, Any]]:
    ct = world["ct_a1"]
    created = []
    for student in STUDENTS:
        response = client.post(
            "/api/v1/students",
            json={"class_id": str(world.class_a1), **student},
            headers=ct.headers,
        )
        assert response.status_code == 201, response.text
        created.append(response.json())
    # Reads and lookups pass the markers through more code paths (audit details among them).
    for entry, student in zip(created, STUDENTS, strict=True):
        response = client.get(f"/api/v1/students/{entry['id']}", headers=ct.headers)
        assert response.status_code == 200, response.text
        stored = response.json()
        for field in ("full_name", "gender", "birth_date", "student_no", "national_id"):
            assert stored[field] == student[field]
        assert stored["address"] == student["address"]
        assert stored["guardians"] == student["guardians"]
        for query in (
            {"student_no": student["student_no"]},
            {"national_id": student["national_id"]},
        ):
            found = client.post("/api/v1/students/lookup", json=query, headers=ct.headers)
            assert found.status_code == 200, found.text
            assert [item["id"] for item in found.json()["items"]] == [entry["id"]]
    missed = client.post(
        "/api/v1/students/lookup", json={"student_no": MISSED_LOOKUP}, headers=ct.headers
    )
    assert missed.status_code == 200, missed.text
    assert missed.json()["items"] == []
    return created


def stored_rows(db: Any, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    async def body(session: AsyncSession) -> list[dict[str, Any]]:
        rows = await session.execute(select(Student.__table__).where(Student.id.in_(ids)))
        return [dict(row._mapping) for row in rows]

    return db.in_transaction(body)


def as_bytes(value: Any) -> bytes:
    return (
        bytes(value) if isinstance(value, bytes | bytearray | memoryview) else str(value).encode()
    )


def sqlite_raw_bytes(database_url: str) -> bytes:
    """The database file and its WAL, before and after a checkpoint (nothing hides in either)."""
    path = Path(make_url(database_url).database or "")
    files = [path, path.with_name(path.name + "-wal")]
    before = b"".join(f.read_bytes() for f in files if f.exists())
    connection = sqlite3.connect(path)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "another connection kept the WAL from being checkpointed"
    finally:
        connection.close()
    after = b"".join(f.read_bytes() for f in files if f.exists())
    return before + b"\n" + after


def pg_dump_bytes(database_url: str) -> bytes:
    url = make_url(database_url)
    command = ["pg_dump", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    command += ["-U", url.username or "postgres", "-d", url.database or ""]
    result = subprocess.run(command, capture_output=True, check=True, timeout=60)
    return result.stdout


def test_no_personal_value_appears_in_the_raw_database(
    client: Any, db: Any, world: Any, settings: Any
) -> None:
    created = write_students_through_the_api(client, world)
    # An edit is sealed like a creation.
    edited = client.patch(
        f"/api/v1/students/{created[0]['id']}",
        json={"address": PATCHED_ADDRESS},
        headers=world["ct_a1"].headers,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["address"] == PATCHED_ADDRESS
    ids = [uuid.UUID(entry["id"]) for entry in created]
    rows = stored_rows(db, ids)
    assert len(rows) == 2

    # Gender cannot carry a marker, but its stored form must not be the plain word.
    for row in rows:
        for column, value in row.items():
            assert b"male" not in as_bytes(value), f"students.{column} holds a gender in clear"

    raw = (
        sqlite_raw_bytes(settings.database_url)
        if db.backend == "sqlite"
        else pg_dump_bytes(settings.database_url)
    )
    # pg_dump writes bytea as hex: look for the markers' hex too (SQLite stores raw bytes).
    haystack_hex = raw.lower()

    # Controls: the scan sees plain columns and the students' own rows.
    assert "测试学校甲".encode() in raw
    for entry in created:
        assert entry["code"].encode() in raw
    for row in rows:
        sealed = as_bytes(row["full_name"])
        assert sealed in raw or sealed.hex().encode() in haystack_hex

    leaked = [
        marker
        for marker in [*ALL_MARKERS, PATCHED_ADDRESS]
        if marker.encode() in raw or marker.encode().hex().encode() in haystack_hex
    ]
    assert leaked == [], f"plaintext found in the raw {db.backend} storage: {leaked}"
