"""Run the benchmarks and write ``var/bench/results.json``.

    python -m benchmarks [--full] [--only NAME[,NAME...]] [--backends sqlite,postgresql]

SQLite always; PostgreSQL too when ``CASEMGR_BENCH_PG_URL`` names an admin connection
(the benchmarks create and drop databases of their own). Quick sizes by default (a few
minutes); ``--full`` runs the sizes of SPEC §8. The results file holds one object per
benchmark and backend, the machine and the git commit; a table is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.common import BACKENDS, machine, scratch, write_results

QUICK = {
    "read_runs": 2,
    "read_seconds": 3.0,
    "authz_questions": 10_000,
    "authz_runs": 2,
    "screening_rows": 20_000,
    "screening_runs": 2,
    "rotation_keys": 20_000,
    "verify_events": 100_000,
    "verify_runs": 3,
    "summary_students": 10_000,
    "summary_schools": 20,
    "summary_runs": 3,
    "roster_rows": 1_500,
    "roster_runs": 2,
}
FULL = {
    "read_runs": 5,
    "read_seconds": 20.0,
    "authz_questions": 100_000,
    "authz_runs": 3,
    "screening_rows": 50_000,
    "screening_runs": 3,
    "rotation_keys": 100_000,
    "verify_events": 1_000_000,
    "verify_runs": 2,
    "summary_students": 100_000,
    "summary_schools": 100,
    "summary_runs": 3,
    "roster_rows": 1_500,
    "roster_runs": 3,
}
NAMES = ("reads", "authz", "screening", "rotation", "verify", "summary", "roster")


def _jobs(
    sizes: dict[str, Any], pg_url: str | None
) -> list[tuple[str, str | None, Callable[[Any, Callable[[str], None]], list[dict[str, Any]]]]]:
    from benchmarks.authz import run_authz
    from benchmarks.imports import run_roster_import, run_screening_import
    from benchmarks.reads import run_reads
    from benchmarks.reports import run_care_summary
    from benchmarks.rotation import run_rotation
    from benchmarks.verify import run_verify

    def with_db(
        backend: str, body: Callable[[Any, Callable[[str], None]], Any]
    ) -> Callable[[Any, Callable[[str], None]], list[dict[str, Any]]]:
        def job(_: Any, progress: Callable[[str], None]) -> list[dict[str, Any]]:
            with scratch(backend, pg_url) as scr:
                found = body(scr, progress)
            return found if isinstance(found, list) else [found]

        return job

    jobs: list[Any] = [
        (
            "authz",
            None,
            lambda _, progress: [
                run_authz(questions=sizes["authz_questions"], runs=sizes["authz_runs"])
            ],
        )
    ]
    for backend in BACKENDS:
        if backend == "postgresql" and not pg_url:
            continue
        jobs += [
            (
                "reads",
                backend,
                with_db(
                    backend,
                    lambda scr, p: run_reads(
                        scr, runs=sizes["read_runs"], duration=sizes["read_seconds"], progress=p
                    ),
                ),
            ),
            (
                "verify",
                backend,
                with_db(
                    backend,
                    lambda scr, p: run_verify(
                        scr, events=sizes["verify_events"], runs=sizes["verify_runs"], progress=p
                    ),
                ),
            ),
            (
                "rotation",
                backend,
                with_db(
                    backend,
                    lambda scr, p: run_rotation(scr, keys=sizes["rotation_keys"], progress=p),
                ),
            ),
            (
                "summary",
                backend,
                with_db(
                    backend,
                    lambda scr, p: run_care_summary(
                        scr,
                        students=sizes["summary_students"],
                        schools=sizes["summary_schools"],
                        runs=sizes["summary_runs"],
                        progress=p,
                    ),
                ),
            ),
            (
                "roster",
                backend,
                with_db(
                    backend,
                    lambda scr, p: run_roster_import(
                        scr, rows=sizes["roster_rows"], runs=sizes["roster_runs"], progress=p
                    ),
                ),
            ),
            (
                "screening",
                backend,
                with_db(
                    backend,
                    lambda scr, p: run_screening_import(
                        scr,
                        pg_url,
                        rows=sizes["screening_rows"],
                        runs=sizes["screening_runs"],
                        progress=p,
                    ),
                ),
            ),
        ]
    return jobs


# The headline figure of each benchmark, for the table.
HEADLINES = {
    "case_read": ("ratio_vs_plain", "p95_ms"),
    "student_read": ("ratio_vs_plain", "p95_ms"),
    "reads_during_logins": ("p95_ms", "p95_ms_alone"),
    "authorization": ("speedup_vs_pycasbin", "identical_decisions"),
    "screening_import": ("rows_per_s", "peak_rss_mb", "ratio_vs_plain"),
    "kek_rotation": ("deks_per_s", "read_failures"),
    "audit_verify": ("events_per_s", "orm_path_events_per_s"),
    "care_summary": ("ms",),
    "roster_import": ("roster_rows_per_s", "ratio_vs_plain"),
}


def _figure(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        return f"{value['median']} ({value['min']}–{value['max']})"
    return str(value)


def _table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="casemgr benchmarks (medians; ranges over runs)")
    for column in ("benchmark", "backend", "figures", "target", "met"):
        table.add_column(column)
    for result in results:
        name = result["benchmark"]
        figures = "\n".join(
            f"{key} = {_figure(result.get(key))}"
            for key in HEADLINES.get(name, ())
            if key in result
        )
        if "rps" in result:
            figures += f"\nrps = {_figure(result['rps'])}"
        if "plain_rps" in result:
            figures += f"\nplain rps = {_figure(result['plain_rps'])}"
        targets = ", ".join(f"{k} {v}" for k, v in result.get("targets", {}).items())
        met = result.get("met")
        table.add_row(
            name,
            result.get("backend") or "-",
            figures,
            targets,
            "[green]yes[/]" if met else "[red]no[/]" if met is False else "-",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--full", action="store_true", help="the sizes of SPEC §8")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(NAMES)}")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    if only - set(NAMES):
        parser.error(f"unknown benchmarks: {', '.join(sorted(only - set(NAMES)))}")
    backends = {b for b in args.backends.split(",") if b}
    pg_url = os.environ.get("CASEMGR_BENCH_PG_URL") or None
    sizes = FULL if args.full else QUICK
    console = Console(stderr=True)
    if not pg_url:
        console.print("CASEMGR_BENCH_PG_URL is not set: SQLite only.")
    jobs = [
        job
        for job in _jobs(sizes, pg_url)
        if (not only or job[0] in only) and (job[1] is None or job[1] in backends)
    ]
    results: list[dict[str, Any]] = []
    started = time.time()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[step]}"),
        console=console,
    ) as progress:
        task = progress.add_task("benchmarks", total=len(jobs), step="")
        for name, backend, job in jobs:
            label = f"{name} [{backend}]" if backend else name

            def step(message: str, label: str = label) -> None:
                progress.update(task, step=f"{label}: {message}")

            step("starting")
            try:
                results.extend(job(None, step))
            except Exception as exc:  # one failure must not lose the other figures
                console.print(f"[red]{label} failed:[/] {type(exc).__name__}: {exc}")
                results.append({"benchmark": name, "backend": backend, "error": repr(exc)})
            progress.advance(task)
    document = {
        "mode": "full" if args.full else "quick",
        "sizes": sizes,
        "seconds": round(time.time() - started, 1),
        "machine": machine(pg_url),
        "results": results,
    }
    path = write_results(document)
    Console().print(_table([r for r in results if "error" not in r]))
    console.print(f"wrote {path}")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
