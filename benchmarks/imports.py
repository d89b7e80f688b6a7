"""Benchmarks 3 and 8: importing screening results and a class roster.

3. ``screening_import``: ``benchmarks/screening_import.py`` (the screening feature's own
   benchmark: 50,000 PHQ-9 rows through ``POST /api/v1/screening/rounds/{id}/results``,
   in a fresh process for its peak memory) run as a subprocess; ``rows_per_s`` >= 5,000,
   ``peak_rss_mb`` <= 300, ``ratio_vs_plain`` >= 0.4 against a plain import of the same
   file (parsed, checked, looked up, scored, inserted as plain text), medians over runs.
8. ``roster_import``: a school's roster of ``rows`` students as CSV through
   ``POST /api/v1/schools/{id}/students/import`` (parse, validate, seal, blind-index,
   store, audit), against parsing the same CSV and inserting it unencrypted.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import date
from typing import Any

from benchmarks.common import ROOT, Scratch, spread
from benchmarks.seed import national_id

HEADER = (
    "class_name,student_no,full_name,gender,birth_date,national_id,address,"
    "guardian_name,guardian_relation,guardian_phone"
)


def _screening_once(scr: Scratch, pg_admin_url: str | None, rows: int) -> dict[str, Any]:
    url = f"sqlite:///{scr.directory / f'screening-{uuid.uuid4().hex[:8]}.db'}"
    if scr.backend == "postgresql":
        from sqlalchemy.engine import make_url

        assert pg_admin_url is not None
        url = (
            make_url(pg_admin_url)
            .set(drivername="postgresql", database=f"casemgr_bench_scr_{uuid.uuid4().hex[:8]}")
            .render_as_string(hide_password=False)
        )
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [
            sys.executable,
            "-m",
            "benchmarks.screening_import",
            "--rows",
            str(rows),
            "--database-url",
            url,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def run_screening_import(
    scr: Scratch, pg_admin_url: str | None, *, rows: int, runs: int, progress: Any
) -> dict[str, Any]:
    found = []
    for run in range(runs):
        progress(f"import {run + 1}/{runs} ({rows} rows, set-up first)")
        found.append(_screening_once(scr, pg_admin_url, rows))
    real = [f["rows_per_second"] for f in found]
    plain = [f["rows"] / f["baseline_plain_import_seconds"] for f in found]
    ratios = [r / p for r, p in zip(real, plain, strict=True)]
    peak = max(f["peak_rss_mb"] for f in found)
    rate, ratio = statistics.median(real), statistics.median(ratios)
    return {
        "benchmark": "screening_import",
        "backend": scr.backend,
        "rows": rows,
        "runs": runs,
        "rows_per_s": round(rate),
        "rows_per_s_runs": spread(real, 0),
        "rows_per_cpu_s": spread([f["rows_per_cpu_second"] for f in found], 0),
        "peak_rss_mb": peak,
        "plain_rows_per_s": spread(plain, 0),
        "ratio_vs_plain": round(ratio, 3),
        "seconds": spread([f["seconds"] for f in found], 2),
        "targets": {"rows_per_s": ">= 5000", "peak_rss_mb": "<= 300", "ratio_vs_plain": ">= 0.4"},
        "met": rate >= 5000 and peak <= 300 and ratio >= 0.4,
    }


def _roster_csv(rows: int, classes: list[str], batch: int) -> bytes:
    out = io.StringIO()
    out.write(HEADER + "\r\n")
    for n in range(rows):
        serial = batch * 100_000 + n
        # A birth year per batch: national IDs of one run never repeat another's.
        birth = date(2013 - batch, 1 + n % 12, 1 + n % 28)
        out.write(
            f"{classes[n % len(classes)]},S{serial:07d},基准学生{serial},"
            f"{'女' if n % 2 else '男'},{birth.isoformat()},{national_id(birth, serial)},"
            f"示例路{n}号,家长{n},母亲,13800000000\r\n"
        )
    return out.getvalue().encode()


async def _plain_insert(settings: Any, body: bytes) -> float:
    """Parse the same CSV and insert it as plain rows: no validation, sealing or audit."""
    from sqlalchemy import Column, MetaData, String, Table, Text, Uuid, insert

    from casemgr.db import create_engine

    metadata = MetaData()
    table = Table(
        f"bench_plain_roster_{uuid.uuid4().hex[:8]}",
        metadata,
        Column("id", Uuid, primary_key=True),
        *(Column(name, Text) for name in HEADER.split(",")),
        Column("code", String(16)),
    )
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        started = time.perf_counter()
        reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
        rows = [{"id": uuid.uuid4(), "code": "X", **row} for row in reader]
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows)
        return time.perf_counter() - started
    finally:
        await engine.dispose()


async def _roster_world(settings: Any, classes: int) -> tuple[str, str, list[str]]:
    from casemgr.accounts.services import create_user, issue_token
    from casemgr.authz import Role
    from casemgr.crypto import Crypto, KeyRing
    from casemgr.db import create_engine, create_sessionmaker, transaction
    from casemgr.schools.services import add_class, add_school
    from casemgr.schoolyear import calendar_school_year

    crypto = Crypto(KeyRing(settings.keys_dir))
    engine = create_engine(settings.database_url)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            school = await add_school(session, name="基准名册学校", code="BENCH-ROSTER")
            names = [f"七年级{n + 1}班" for n in range(classes)]
            for name in names:
                await add_class(
                    session,
                    school_id=school.id,
                    name=name,
                    grade=7,
                    school_year=calendar_school_year(),
                )
            leader = await create_user(
                session,
                crypto,
                username="bench.leader",
                password="benchmark password 1",  # noqa: S106 - scratch database
                role=Role.SCHOOL_LEADER,
                school_id=school.id,
            )
            token, _, _ = await issue_token(session, settings, leader.id)
        return str(school.id), token, names
    finally:
        await engine.dispose()


def run_roster_import(scr: Scratch, *, rows: int, runs: int, progress: Any) -> dict[str, Any]:
    from litestar.testing import TestClient

    from casemgr.app import create_app

    settings = scr.settings()
    school_id, token, classes = asyncio.run(_roster_world(settings, 30))
    real, plain = [], []
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        for run in range(runs):
            progress(f"roster import {run + 1}/{runs}")
            body = _roster_csv(rows, classes, run)
            plain.append(rows / asyncio.run(_plain_insert(settings, body)))
            started = time.perf_counter()
            response = client.post(
                f"/api/v1/schools/{school_id}/students/import",
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
            )
            elapsed = time.perf_counter() - started
            if response.status_code != 200 or response.json().get("created") != rows:
                raise RuntimeError(
                    f"roster import failed: {response.status_code} {response.text[:300]}"
                )
            real.append(rows / elapsed)
    ratios = [r / p for r, p in zip(real, plain, strict=True)]
    return {
        "benchmark": "roster_import",
        "backend": scr.backend,
        "rows": rows,
        "runs": runs,
        "roster_rows_per_s": round(statistics.median(real)),
        "roster_rows_per_s_runs": spread(real, 0),
        "plain_rows_per_s": spread(plain, 0),
        "ratio_vs_plain": round(statistics.median(ratios), 3),
        "targets": {"roster_rows_per_s": "reported against a plain insert"},
        "met": True,
    }
