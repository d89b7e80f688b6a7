"""Benchmark: importing 50,000 PHQ-9 rows (SPEC §8: >= 5,000 rows/s, peak memory <= 300 MB).

    python benchmarks/screening_import.py [--rows 50000] [--database-url URL]

The set-up (a school with 50 classes, one student per row, granted consent for each, a
round over every class) runs in one process; the import runs in a fresh one, through
the real route (``POST /api/v1/screening/rounds/{id}/results`` with a CSV body, in
process through Litestar's test client): parse, validate, score, encrypt, store, audit.
That process reports the import's rows per second (wall clock, and per CPU second of the
process, which a busy machine does not distort), its peak resident memory (the whole
process, application included) and, as a baseline from the same run, how long a plain
unencrypted, unaudited import of the same file takes: parsed, checked, each student looked
up by a plain number, scored and inserted as plain text into scratch tables.
The database server's own CPU time (PostgreSQL) is not in the CPU figure.

Without ``--database-url`` a temporary SQLite file is used; a PostgreSQL URL names a
database that the benchmark creates and drops (``postgresql://postgres@127.0.0.1/bench``).
The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROWS = 50_000
CLASSES = 50


def _settings(database_url: str, keys_dir: Path, var_dir: Path) -> Any:
    from casemgr.settings import Settings, normalise_database_url

    return Settings(
        database_url=normalise_database_url(database_url),
        keys_dir=keys_dir,
        var_dir=var_dir,
        checkpoint_file=var_dir / "audit-checkpoints.jsonl",
        checkpoint_interval_seconds=0,
    )


async def _setup(settings: Any, rows: int) -> dict[str, Any]:
    from sqlalchemy import Table, insert

    from casemgr import clock
    from casemgr.accounts.services import create_user, issue_token
    from casemgr.authz import Role
    from casemgr.crypto import Crypto, KeyRing
    from casemgr.crypto.envelope import FieldCipher, new_data_key, wrap_with
    from casemgr.crypto.models import DataKey
    from casemgr.db import create_engine, create_sessionmaker, transaction
    from casemgr.migrate import upgrade
    from casemgr.schools.services import add_class, add_school
    from casemgr.screening.bulk import seal_values
    from casemgr.screening.models import Consent, RoundClass, ScreeningRound
    from casemgr.students.models import Student
    from casemgr.students.services import new_student_code

    await upgrade(settings.database_url)
    crypto = Crypto(KeyRing(settings.keys_dir))
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    today = clock.today()
    year = f"{today.year - 1}-{today.year}" if today.month < 8 else f"{today.year}-{today.year + 1}"
    async with transaction(sessions) as session:
        school = await add_school(session, name="基准测试学校", code="BENCH")
        classes = [
            await add_class(
                session, school_id=school.id, name=f"班{n:02d}", grade=7, school_year=year
            )
            for n in range(CLASSES)
        ]
        created = await create_user(
            session,
            crypto,
            username="bench.counselor",
            password="benchmark password 1",  # noqa: S106 - a throwaway account
            role=Role.COUNSELOR,
            school_id=school.id,
        )
        token, _, _ = await issue_token(session, settings, created.id)
        screening_round = ScreeningRound(
            id=uuid.uuid4(),
            school_id=school.id,
            name="基准",
            instrument="phq9",
            school_year=year,
            opens_on=today - timedelta(days=10),
            closes_on=today + timedelta(days=10),
        )
        session.add(screening_round)
        await session.flush()
        session.add_all(RoundClass(round_id=screening_round.id, class_id=c.id) for c in classes)
    version = crypto.keyring.current_kek_version
    kek = crypto.kek_aead(version)
    numbers = []
    for start in range(0, rows, 5000):
        keys, students, consents = [], [], []
        for n in range(start, min(rows, start + 5000)):
            key_id, raw, student_id = uuid.uuid4(), new_data_key(), uuid.uuid4()
            cipher = FieldCipher(key_id, raw)
            number = f"B{n:07d}"
            numbers.append(number)
            keys.append(
                {
                    "id": key_id,
                    "purpose": "student",
                    "kek_version": version,
                    "wrapped": wrap_with(kek, version, key_id, raw),
                }
            )
            students.append(
                {
                    "id": student_id,
                    "school_id": school.id,
                    "class_id": classes[n % CLASSES].id,
                    "code": new_student_code(),
                    "data_key_id": key_id,
                    "student_no_bidx": crypto.blind_index("student_no", number, str(school.id)),
                    "national_id_bidx": os.urandom(8),
                    "bidx_version": crypto.keyring.blind_index_version,
                    **seal_values(
                        cipher,
                        Student,
                        student_id,
                        {
                            "full_name": f"基准学生{n}",
                            "gender": "female",
                            "birth_date": today.replace(year=today.year - 13),
                            "student_no": number,
                            "national_id": None,
                            "address": None,
                            "guardians": None,
                        },
                    ),
                }
            )
            consent_id = uuid.uuid4()
            consents.append(
                {
                    "id": consent_id,
                    "round_id": screening_round.id,
                    "student_id": student_id,
                    **seal_values(
                        cipher,
                        Consent,
                        consent_id,
                        {"decision": "granted", "guardian_name": "家长", "recorded_on": today},
                    ),
                }
            )
        async with transaction(sessions) as session:
            for model, values in ((DataKey, keys), (Student, students), (Consent, consents)):
                table: Table = model.__table__  # type: ignore[assignment]
                await session.execute(insert(table), values)
    await engine.dispose()
    return {"round_id": str(screening_round.id), "token": token, "numbers": numbers}


def _csv(numbers: list[str], on: str) -> bytes:
    rng = random.Random(8)  # nosec B311 - benchmark data
    lines = ["student_no,administered_on," + ",".join(f"q{n}" for n in range(1, 10))]
    for number in numbers:
        answers = [rng.choice((0, 0, 1, 1, 2, 3)) for _ in range(9)]
        lines.append(f"{number},{on}," + ",".join(map(str, answers)))
    return ("\r\n".join(lines) + "\r\n").encode()


async def _baseline(settings: Any, body: bytes, numbers: list[str]) -> float:
    """The same file imported plainly: parsed, checked, looked up, scored and inserted as
    plain text in one transaction, with no key, no seal, no authorization and no audit."""
    from sqlalchemy import (
        Column,
        Date,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        Uuid,
        insert,
        select,
    )

    from casemgr.db import create_engine

    metadata = MetaData()
    students = Table(
        "bench_plain_students",
        metadata,
        Column("student_no", String(32), primary_key=True),
        Column("id", Uuid, nullable=False),
    )
    results = Table(
        "bench_plain_results",
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("student_id", Uuid, nullable=False),
        Column("administered_on", Date, nullable=False),
        Column("answers", Text, nullable=False),
        Column("total", Integer, nullable=False),
        Column("band", String(32), nullable=False),
    )
    engine = create_engine(settings.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        for start in range(0, len(numbers), 5000):
            await conn.execute(
                insert(students),
                [{"student_no": n, "id": uuid.uuid4()} for n in numbers[start : start + 5000]],
            )
    bands = ((20, "severe"), (15, "moderately_severe"), (10, "moderate"), (5, "mild"))
    started = time.perf_counter()
    async with engine.begin() as conn:
        ids = dict((await conn.execute(select(students.c.student_no, students.c.id))).all())
        reader = csv.reader(io.StringIO(body.decode("utf-8")))
        header = next(reader)
        at = {name: index for index, name in enumerate(header)}
        questions = [at[f"q{n}"] for n in range(1, 10)]
        batch: list[dict[str, Any]] = []
        for cells in reader:
            answers = [int(cells[i]) for i in questions]
            if not all(0 <= a <= 3 for a in answers):
                raise SystemExit("a plain row out of range")
            total = sum(answers)
            batch.append(
                {
                    "id": uuid.uuid4(),
                    "student_id": ids[cells[at["student_no"]].strip()],
                    "administered_on": date.fromisoformat(cells[at["administered_on"]]),
                    "answers": json.dumps(answers),
                    "total": total,
                    "band": next((name for low, name in bands if total >= low), "minimal"),
                }
            )
            if len(batch) == 1000:
                await conn.execute(insert(results), batch)
                batch = []
        if batch:
            await conn.execute(insert(results), batch)
    elapsed = time.perf_counter() - started
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await engine.dispose()
    return elapsed


def _import(settings: Any, state: dict[str, Any]) -> dict[str, Any]:
    from litestar.testing import TestClient

    from casemgr import clock
    from casemgr.app import create_app

    body = _csv(state["numbers"], (clock.today() - timedelta(days=1)).isoformat())
    rows = len(state["numbers"])
    baseline = asyncio.run(_baseline(settings, body, state.pop("numbers")))
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=True) as client:
        before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu_started = time.process_time()
        started = time.perf_counter()
        response = client.post(
            f"/api/v1/screening/rounds/{state['round_id']}/results",
            content=body,
            headers={"Authorization": f"Bearer {state['token']}", "Content-Type": "text/csv"},
        )
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    if response.status_code != 200 or response.json()["imported"] != rows:
        raise SystemExit(f"import failed: {response.status_code} {response.text[:500]}")
    return {
        "rows": rows,
        "seconds": round(elapsed, 2),
        "rows_per_second": round(rows / elapsed),
        # CPU time of this process (every thread) during the import: on a busy machine the
        # wall clock also counts other processes' turns.
        "cpu_seconds": round(cpu, 2),
        "rows_per_cpu_second": round(rows / cpu),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_import_mb": round(before_rss),
        "baseline_plain_import_seconds": round(baseline, 3),
    }


def _pg_admin(url: str, statement: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(url).set(drivername="postgresql", database="postgres")

    async def run() -> None:
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--phase", choices=("all", "import"), default="all", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "import":
        work = Path(args.work)
        state = json.loads((work / "state.json").read_text())
        settings = _settings(state["database_url"], work / "keys", work / "var")
        print(json.dumps(_import(settings, state)))
        return
    from casemgr.crypto import create_key_ring

    with tempfile.TemporaryDirectory(prefix="casemgr-bench-") as tmp:
        work = Path(tmp)
        create_key_ring(work / "keys")
        url = args.database_url or f"sqlite:///{work / 'bench.db'}"
        if url.startswith("postgres"):
            from sqlalchemy.engine import make_url

            name = make_url(url).database
            _pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _pg_admin(url, f'CREATE DATABASE "{name}"')
        try:
            settings = _settings(url, work / "keys", work / "var")
            print(f"setting up {args.rows} students...", file=sys.stderr)
            state = asyncio.run(_setup(settings, args.rows))
            state["database_url"] = url
            (work / "state.json").write_text(json.dumps(state))
            print("importing...", file=sys.stderr)
            done = subprocess.run(  # noqa: S603 - this interpreter, this script
                [sys.executable, __file__, "--phase", "import", "--work", str(work)],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["database"] = "postgresql" if url.startswith("postgres") else "sqlite"
            print(json.dumps(result))
        finally:
            if url.startswith("postgres"):
                _pg_admin(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
