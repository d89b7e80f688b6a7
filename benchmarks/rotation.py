"""Benchmark 4: rotating the key-encryption key over many student keys while a client reads.

The scratch database holds the HTTP benchmarks' school (so that a client can read
students over HTTP from the benchmark server) and ``keys`` further data keys wrapped under
the current KEK. ``casemgr.crypto.rotation.rotate`` (what ``casemgr keys rotate`` runs)
rewraps all of them under a new version in this process while 8 clients read students
from the server in another: ``deks_per_s`` >= 10,000 with zero failed reads (SPEC §8).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Scratch
from benchmarks.reads import finish_load, serving, start_load
from benchmarks.seed import seed_reads


async def _add_keys(settings: Any, count: int) -> None:
    from sqlalchemy import insert

    from casemgr.crypto import Crypto, KeyRing
    from casemgr.crypto.envelope import new_data_key, wrap_with
    from casemgr.crypto.models import DataKey
    from casemgr.db import create_engine

    crypto = Crypto(KeyRing(settings.keys_dir))
    version = crypto.keyring.current_kek_version
    kek = crypto.kek_aead(version)
    engine = create_engine(settings.database_url)
    try:
        for start in range(0, count, 10_000):
            rows = []
            for _ in range(start, min(count, start + 10_000)):
                key_id = uuid.uuid4()
                rows.append(
                    {
                        "id": key_id,
                        "purpose": "student",
                        "kek_version": version,
                        "wrapped": wrap_with(kek, version, key_id, new_data_key()),
                    }
                )
            async with engine.begin() as conn:
                await conn.execute(insert(DataKey.__table__), rows)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def _rotate(settings: Any) -> tuple[float, int]:
    from casemgr.crypto import KeyRing
    from casemgr.crypto.rotation import rotate
    from casemgr.db import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url)
    try:
        started = time.perf_counter()
        result = await rotate(create_sessionmaker(engine), KeyRing(settings.keys_dir))
        return time.perf_counter() - started, result.rewrapped
    finally:
        await engine.dispose()


def run_rotation(scr: Scratch, *, keys: int, progress: Any) -> dict[str, Any]:
    settings = scr.settings()
    progress("seeding")
    world = asyncio.run(seed_reads(settings, classes=2, per_class=50))
    progress(f"adding {keys} data keys")
    asyncio.run(_add_keys(settings, keys))
    with tempfile.TemporaryDirectory(prefix="casemgr-bench-rotation-") as tmp:
        workdir = Path(tmp)
        with serving(scr, workdir=workdir) as port:
            plan = {
                "port": port,
                "duration": 600,  # cut short below, once the rotation is done
                "warmup": 0.5,
                "clients": [
                    {
                        "paths": [f"/api/v1/students/{i}" for i in world.student_ids],
                        "headers": {"Authorization": f"Bearer {world.tokens[n]}"},
                        "offset": n * 7,
                    }
                    for n in range(8)
                ],
                "stop_file": str(workdir / "stop"),
            }
            reader = start_load(plan, workdir, "reader")
            time.sleep(1.5)
            progress("rotating")
            seconds, rewrapped = asyncio.run(_rotate(settings))
            time.sleep(0.5)
            (workdir / "stop").touch()
            reads = finish_load(reader)
    per_second = rewrapped / seconds
    return {
        "benchmark": "kek_rotation",
        "backend": scr.backend,
        "keys": rewrapped,
        "seconds": round(seconds, 2),
        "deks_per_s": round(per_second),
        "reads_during": reads["requests"],
        "read_failures": reads["errors"],
        "read_p95_ms": reads["p95_ms"],
        "read_statuses": reads["statuses"],
        "targets": {"deks_per_s": ">= 10000", "read_failures": 0},
        "met": per_second >= 10_000 and reads["errors"] == 0 and reads["requests"] > 0,
    }
