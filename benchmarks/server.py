"""The benchmark's app factory and server process.

    python -m benchmarks.server CONFIG.json

Serves the real application (``casemgr.app.create_app``), as ``casemgr serve`` runs it,
plus routes that exist only here, never in production:

- ``GET /_bench/plain/students/{id}`` and ``GET /_bench/plain/cases/{id}``: the same rows
  as the student and case-file reads, kept unencrypted in tables of their own
  (``bench_plain_*``, created by the benchmark's seeding), read without authentication,
  authorization or audit: the baseline of SPEC §8;
- ``GET /_bench/stats``: the SQLite writer queue's waits and the audit appender's batches.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import replace
from typing import Any

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from sqlalchemy import Column, Date, MetaData, String, Table, Text, Uuid, select

PLAIN = MetaData()
PLAIN_STUDENTS = Table(
    "bench_plain_students",
    PLAIN,
    Column("id", Uuid, primary_key=True),
    Column("code", String(16)),
    Column("school_id", Uuid),
    Column("class_id", Uuid),
    Column("full_name", Text),
    Column("gender", Text),
    Column("birth_date", Date),
    Column("student_no", Text),
    Column("national_id", Text),
    Column("address", Text),
    Column("guardians", Text),
)
PLAIN_CASES = Table(
    "bench_plain_cases",
    PLAIN,
    Column("id", Uuid, primary_key=True),
    Column("code", String(16)),
    Column("student_id", Uuid),
    Column("status", Text),
    Column("opened_on", Date),
    Column("review_on", Date),
    Column("closed_on", Date),
    Column("open_reason", Text),
    Column("close_reason", Text),
    Column("support_plan", Text),
)
# One table per kind of entry in a file, as the real one has.
PLAIN_CATEGORIES = Table(
    "bench_plain_categories",
    PLAIN,
    Column("id", Uuid, primary_key=True),
    Column("case_id", Uuid, index=True),
    Column("category", Text),
    Column("since", Date),
    Column("details", Text),
    Column("review_on", Date),
    Column("ended_on", Date),
    Column("end_reason", Text),
)
PLAIN_SUPPORT_LOGS = Table(
    "bench_plain_support_logs",
    PLAIN,
    Column("id", Uuid, primary_key=True),
    Column("case_id", Uuid, index=True),
    Column("occurred_on", Date),
    Column("kind", Text),
    Column("notes", Text),
    Column("follow_up_on", Date),
)
PLAIN_HOME_VISITS = Table(
    "bench_plain_home_visits",
    PLAIN,
    Column("id", Uuid, primary_key=True),
    Column("student_id", Uuid, index=True),
    Column("visited_on", Date),
    Column("mode", Text),
    Column("notes", Text),
    Column("participant_ids", Text),
)


def _row(mapping: Any) -> dict[str, Any]:
    return {key: value for key, value in mapping.items()}


@get("/_bench/plain/students/{student_id:uuid}", include_in_schema=False)
async def plain_student(student_id: uuid.UUID, state: State) -> dict[str, Any]:
    async with state.bench_reader.connect() as conn:
        row = (
            await conn.execute(select(PLAIN_STUDENTS).where(PLAIN_STUDENTS.c.id == student_id))
        ).one_or_none()
    if row is None:
        raise NotFoundException()
    student = _row(row._mapping)
    student["guardians"] = json.loads(student["guardians"] or "[]")
    return student


@get("/_bench/plain/cases/{case_id:uuid}", include_in_schema=False)
async def plain_case(case_id: uuid.UUID, state: State) -> dict[str, Any]:
    async with state.bench_reader.connect() as conn:
        row = (
            await conn.execute(select(PLAIN_CASES).where(PLAIN_CASES.c.id == case_id))
        ).one_or_none()
        if row is None:
            raise NotFoundException()
        case = _row(row._mapping)
        case["care_categories"] = [
            _row(r._mapping)
            for r in await conn.execute(
                select(PLAIN_CATEGORIES).where(PLAIN_CATEGORIES.c.case_id == case_id)
            )
        ]
        case["support_logs"] = [
            _row(r._mapping)
            for r in await conn.execute(
                select(PLAIN_SUPPORT_LOGS).where(PLAIN_SUPPORT_LOGS.c.case_id == case_id)
            )
        ]
        case["home_visits"] = [
            {**_row(r._mapping), "participant_ids": json.loads(r.participant_ids or "[]")}
            for r in await conn.execute(
                select(PLAIN_HOME_VISITS).where(
                    PLAIN_HOME_VISITS.c.student_id == case["student_id"]
                )
            )
        ]
    return case


@get("/_bench/stats", include_in_schema=False)
async def stats(state: State) -> dict[str, Any]:
    try:
        from casemgr.audit import appender_for
        from casemgr.db import sqlite_writer_stats
    except ImportError:  # a checkout from before the audit appender (a baseline run)
        return {}
    answer: dict[str, Any] = {"appender": appender_for(state.engine).stats.as_dict()}
    if state.settings.is_sqlite:
        answer["sqlite_writer"] = sqlite_writer_stats(state.settings.database_url)
    return answer


def create_bench_app(settings: Any) -> Litestar:
    """The production app with the benchmark-only routes above."""
    from casemgr.app import create_app

    app = create_app(settings)
    try:
        from casemgr.db import read_only_engine
    except ImportError:  # a checkout from before read-only sessions (a baseline run)
        app.state.bench_reader = app.state.engine
    else:
        app.state.bench_reader = read_only_engine(app.state.engine)
    for handler in (plain_student, plain_case, stats):
        app.register(handler)
    return app


def main() -> None:
    import uvicorn

    from casemgr.settings import Settings, normalise_database_url

    try:
        from casemgr.cli import uvicorn_options
    except ImportError:  # a checkout from before (a baseline run): as its serve ran uvicorn

        def uvicorn_options(host: str, port: int) -> dict[str, Any]:
            return {"host": host, "port": port, "proxy_headers": False, "server_header": False}

    with open(sys.argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    from pathlib import Path

    # The service's own settings, as ``casemgr serve`` reads them from the environment.
    settings = Settings.from_env(
        {
            **os.environ,
            "CASEMGR_DATABASE_URL": normalise_database_url(config["database_url"]),
            "CASEMGR_KEYS_DIR": config["keys_dir"],
            "CASEMGR_VAR_DIR": config["var_dir"],
            "CASEMGR_AUDIT_CHECKPOINT_FILE": str(Path(config["var_dir"]) / "checkpoints.jsonl"),
            "CASEMGR_AUDIT_CHECKPOINT_SECONDS": "0",
        }
    )
    if "password_hash_workers" in config:
        settings = replace(settings, password_hash_workers=int(config["password_hash_workers"]))
    options = uvicorn_options("127.0.0.1", int(config["port"]))
    options.update(config.get("uvicorn", {}))
    uvicorn.run(create_bench_app(settings), **options)


if __name__ == "__main__":
    main()
