"""Benchmarks 1 and 7: reading a case file and a student over HTTP, and reads during logins.

The service runs as ``casemgr serve`` runs it (uvicorn, one process) with the
benchmark-only plain routes added (``benchmarks.server``); the load comes from another
process (``benchmarks.load``: 8 keep-alive clients in a closed loop). Each run measures
the plain route and the real one in turn (plain, real, plain, real ...), so that each
ratio pairs two neighbouring measurements of one server on a shared, noisy machine.

1. ``case_read`` (``GET /api/v1/cases/{id}``: about twenty sealed fields, authorization,
   an audit event) and ``student_read`` (``GET /api/v1/students/{id}``), each against its
   plain twin: ``ratio_vs_plain`` >= 0.5 and ``p95_ms`` <= 50 (SPEC §8).
7. ``reads_during_logins``: the student read by ``OTHER_CLIENTS`` clients (the other
   requests of an office, not a saturating load, whose p95 would only measure queueing)
   while 20 clients log in over and over (Argon2id); ``p95_ms`` of the reads <= 50,
   against the same reads alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Scratch, median, spread
from benchmarks.seed import PASSWORD, ReadWorld, seed_reads

CLIENTS = 8
OTHER_CLIENTS = 2
LOGIN_CLIENTS = 20
LOAD_GENERATOR = "benchmarks.load (asyncio, hand-built HTTP/1.1, separate process)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(scr: Scratch, *, workdir: Path, **config: Any) -> Iterator[int]:
    """The benchmark server in a process of its own; yields its port."""
    port = _free_port()
    config_file = workdir / "server.json"
    config_file.write_text(
        json.dumps(
            {
                "database_url": scr.database_url,
                "keys_dir": str(scr.keys_dir),
                "var_dir": str(scr.directory / "var"),
                "port": port,
                **config,
            }
        )
    )
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own module, our own interpreter
        [sys.executable, "-m", "benchmarks.server", str(config_file)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the benchmark server exited; see {workdir / 'server.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def start_load(plan: dict[str, Any], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    plan_file = workdir / f"{name}.json"
    plan_file.write_text(json.dumps(plan))
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "benchmarks.load", str(plan_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )


def finish_load(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=600)
    if process.returncode != 0:
        raise RuntimeError("the load generator failed")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def _clients(
    paths: list[str], tokens: list[str] | None, count: int = CLIENTS
) -> list[dict[str, Any]]:
    clients = []
    for n in range(count):
        headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"} if tokens else {}
        clients.append({"paths": paths, "headers": headers, "offset": n * 7})
    return clients


def _plans(world: ReadWorld, port: int, duration: float) -> dict[str, dict[str, Any]]:
    def plan(paths: list[str], tokens: list[str] | None) -> dict[str, Any]:
        return {
            "port": port,
            "duration": duration,
            "warmup": 1.0,
            "clients": _clients(paths, tokens),
        }

    return {
        "student_read": plan([f"/api/v1/students/{i}" for i in world.student_ids], world.tokens),
        "student_plain": plan([f"/_bench/plain/students/{i}" for i in world.student_ids], None),
        "case_read": plan([f"/api/v1/cases/{i}" for i in world.case_ids], world.tokens),
        "case_plain": plan([f"/_bench/plain/cases/{i}" for i in world.case_ids], None),
        "other_reads": {
            "port": port,
            "duration": duration,
            "warmup": 1.0,
            "clients": _clients(
                [f"/api/v1/students/{i}" for i in world.student_ids], world.tokens, OTHER_CLIENTS
            ),
        },
    }


def _login_plan(world: ReadWorld, port: int, duration: float) -> dict[str, Any]:
    clients = [
        {
            "method": "POST",
            "paths": ["/api/v1/auth/login"],
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"username": user, "password": PASSWORD}),
        }
        for user in world.logins[:LOGIN_CLIENTS]
    ]
    # Started a little earlier than the reads, so that every read counted meets logins.
    return {"port": port, "duration": duration + 1.0, "warmup": 0.5, "clients": clients}


def _summary(
    name: str, backend: str, real: list[dict[str, Any]], plain: list[dict[str, Any]]
) -> dict[str, Any]:
    ratios = [r["rps"] / p["rps"] for r, p in zip(real, plain, strict=True) if p["rps"]]
    return {
        "benchmark": name,
        "backend": backend,
        "clients": CLIENTS,
        "runs": len(real),
        "seconds_per_run": real[0]["seconds"] if real else None,
        "rps": spread([r["rps"] for r in real]),
        "p50_ms": spread([r["p50_ms"] for r in real]),
        "p95_ms": median([r["p95_ms"] for r in real]),
        "p95_ms_runs": spread([r["p95_ms"] for r in real]),
        "p99_ms": spread([r["p99_ms"] for r in real]),
        "plain_rps": spread([p["rps"] for p in plain]),
        "plain_p95_ms": spread([p["p95_ms"] for p in plain]),
        "ratio_vs_plain": round(median(ratios), 3),
        "ratio_vs_plain_runs": spread(ratios, 3),
        "errors": sum(r["errors"] for r in real) + sum(p["errors"] for p in plain),
        "targets": {"ratio_vs_plain": ">= 0.5", "p95_ms": "<= 50"},
        "met": median(ratios) >= 0.5 and median([r["p95_ms"] for r in real]) <= 50,
        "load_generator": LOAD_GENERATOR,
    }


def run_reads(
    scr: Scratch, *, runs: int, duration: float, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    settings = scr.settings()
    progress("seeding")
    world = asyncio.run(seed_reads(settings, logins=LOGIN_CLIENTS))
    with tempfile.TemporaryDirectory(prefix="casemgr-bench-http-") as tmp:
        workdir = Path(tmp)
        with serving(scr, workdir=workdir) as port:
            plans = _plans(world, port, duration)
            measured: dict[str, list[dict[str, Any]]] = {name: [] for name in plans}
            alone: list[dict[str, Any]] = []
            during: list[dict[str, Any]] = []
            logins: list[dict[str, Any]] = []
            for run in range(runs):
                for name in ("student_plain", "student_read", "case_plain", "case_read"):
                    progress(f"{name} {run + 1}/{runs}")
                    measured[name].append(finish_load(start_load(plans[name], workdir, name)))
                progress(f"reads during logins {run + 1}/{runs}")
                alone.append(finish_load(start_load(plans["other_reads"], workdir, "alone")))
                login_load = start_load(_login_plan(world, port, duration), workdir, "logins")
                time.sleep(0.5)
                reads = start_load(plans["other_reads"], workdir, "reads_with_logins")
                during.append(finish_load(reads))
                logins.append(finish_load(login_load))
            stats = _get_json(port, "/_bench/stats")
    backend = scr.backend
    results = [
        _summary("case_read", backend, measured["case_read"], measured["case_plain"]),
        _summary("student_read", backend, measured["student_read"], measured["student_plain"]),
    ]
    p95_during = median([d["p95_ms"] for d in during])
    results.append(
        {
            "benchmark": "reads_during_logins",
            "backend": backend,
            "clients": OTHER_CLIENTS,
            "login_clients": LOGIN_CLIENTS,
            "runs": len(during),
            "p95_ms": p95_during,
            "p95_ms_runs": spread([d["p95_ms"] for d in during]),
            "p95_ms_alone": spread([a["p95_ms"] for a in alone]),
            "rps": spread([d["rps"] for d in during]),
            "rps_alone": spread([a["rps"] for a in alone]),
            "logins_per_s": spread([entry["rps"] for entry in logins]),
            "login_p95_ms": spread([entry["p95_ms"] for entry in logins]),
            "errors": sum(d["errors"] for d in during),
            "login_errors": sum(entry["errors"] for entry in logins),
            "password_hash_workers": settings.password_hash_workers,
            "targets": {"p95_ms": "<= 50"},
            "met": p95_during <= 50,
            "load_generator": LOAD_GENERATOR,
        }
    )
    for result in results:
        result["server"] = stats
    return results


def cpu_count() -> int:
    return os.cpu_count() or 1
