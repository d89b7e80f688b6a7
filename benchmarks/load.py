"""A small HTTP/1.1 load generator, run as a process of its own.

    python -m benchmarks.load PLAN.json

The plan names the server's port, how long to run (after a warm-up whose requests are not
counted) and one entry per client: a keep-alive connection that sends its requests one
after the other (a closed loop, like ``wrk -c``), cycling through its paths. It prints
one JSON line: requests, errors, requests per second and latency percentiles.

Written on asyncio streams with hand-built requests (uvloop when installed) so that it
costs the shared CPUs far less than the server it measures; what it costs is the same for
every route, so figures from one plan are comparable.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any


def _request(method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _client(
    port: int,
    spec: dict[str, Any],
    start_counting: float,
    stop: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    stop_file = spec.get("stop_file")
    body = spec.get("body")
    requests = [
        _request(
            spec.get("method", "GET"),
            path,
            spec.get("headers", {}),
            None if body is None else body.encode(),
        )
        for path in spec["paths"]
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = int(spec.get("offset", 0))
    try:
        while True:
            sent = time.perf_counter()
            if sent >= stop or (stop_file and n % 50 == 0 and os.path.exists(stop_file)):  # noqa: ASYNC240
                break
            writer.write(requests[n % len(requests)])
            n += 1
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                statuses[-1] = statuses.get(-1, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            if sent >= start_counting:
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    now = time.perf_counter()
    start_counting = now + float(plan.get("warmup", 1.0))
    stop = start_counting + float(plan["duration"])
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    await asyncio.gather(
        *(
            _client(
                plan["port"],
                {"stop_file": plan.get("stop_file"), **spec},
                start_counting,
                stop,
                latencies,
                statuses,
            )
            for spec in plan["clients"]
        )
    )
    elapsed = time.perf_counter() - start_counting
    latencies.sort()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)

    def pct(fraction: float) -> float:
        if not latencies:
            return float("nan")
        return round(1000 * latencies[min(len(latencies) - 1, int(fraction * len(latencies)))], 2)

    return {
        "requests": len(latencies),
        "ok": ok,
        "errors": len(latencies) - ok + statuses.get(-1, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * latencies[-1], 2) if latencies else float("nan"),
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        plan = json.load(handle)
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run  # type: ignore[assignment]
    print(json.dumps(run_loop(run(plan))))


if __name__ == "__main__":
    main()
