"""The mixed load: sixteen people working at once, and a ledger of what was acknowledged.

Each client is one account on a keep-alive connection of its own, sending its next request
as soon as the last one is answered (a closed loop), through the requests its role makes
every day:

- class teachers (ten): read a case file of their class, log support, read a file again,
  record a home visit;
- counselors (four): review a result (``no_concern``), read a case file, review another
  (``support`` with guidance for teachers, for a student whose file is open: it links
  that file), read a result;
- school leaders (two): import a small roster (ten new students) every half second.

Every answer is written to the ledger with the audit events an answer of that kind must
have left (``EVENTS``) and what it created, so that a test can check afterwards that each
acknowledged write is stored and that the trail holds exactly one trace per access.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from casemgr import clock
from tests.stress.harness import Answer, Connection
from tests.stress.world import Account, World, roster_csv

ROSTER_ROWS = 10
ROSTER_PAUSE_SECONDS = 0.5  # a leader's think time between imports (load shape, not sync)


@dataclass
class Outcome:
    client: int
    actor: str
    op: str
    status: int
    started: float
    seconds: float
    retry_after: str | None
    content_type: str | None
    # The audit events the request must have left when it was acknowledged.
    events: dict[str, int]
    # What it wrote (acknowledged) or meant to write: ("support_log", id) once answered,
    # ("review", result_id, outcome, notes), ("roster", school_id, created or None).
    wrote: tuple[Any, ...] | None = None

    @property
    def acknowledged(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Ledger:
    outcomes: list[Outcome] = field(default_factory=list)
    _waiting: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        for count, event in self._waiting:
            if len(self.outcomes) >= count:
                event.set()

    async def reached(self, count: int) -> None:
        """Return once ``count`` answers are in."""
        event = asyncio.Event()
        self._waiting.append((count, event))
        if len(self.outcomes) >= count:
            event.set()
        await event.wait()

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    def acknowledged(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.acknowledged]

    def expected_events(
        self, outcomes: Sequence[Outcome] | None = None
    ) -> Counter[tuple[str, str]]:
        """(actor, action) -> events the acknowledged requests must have left."""
        expected: Counter[tuple[str, str]] = Counter()
        for o in self.acknowledged() if outcomes is None else outcomes:
            for action, count in o.events.items():
                expected[(o.actor, action)] += count
        return expected

    def written(self, kind: str) -> list[tuple[Any, ...]]:
        """What acknowledged requests of ``kind`` wrote, in the order of their answers."""
        return [o.wrote for o in self.acknowledged() if o.wrote and o.wrote[0] == kind]

    def unanswered(self, kind: str) -> list[Outcome]:
        """Requests of ``kind`` that failed: each may or may not have been stored."""
        return [o for o in self.outcomes if not o.acknowledged and o.wrote and o.wrote[0] == kind]

    def summary(self) -> dict[str, Any]:
        by_op: dict[str, list[float]] = {}
        for o in self.outcomes:
            by_op.setdefault(o.op, []).append(o.seconds)
        seconds = sorted(o.seconds for o in self.outcomes)
        return {
            "requests": len(self.outcomes),
            "statuses": {str(k): v for k, v in sorted(self.statuses().items())},
            "latency_ms": _percentiles(seconds),
            "by_op": {op: {"n": len(v), **_percentiles(sorted(v))} for op, v in by_op.items()},
        }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}

    def at(fraction: float) -> float:
        return round(1000 * seconds[min(len(seconds) - 1, int(fraction * len(seconds)))], 1)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(1000 * seconds[-1], 1)}


# An operation sends one request and says what it must leave behind when acknowledged.
Op = Callable[
    [Connection, int], Awaitable[tuple[str, Answer, dict[str, int], tuple[Any, ...] | None]]
]


@dataclass
class ClientSpec:
    account: Account
    ops: list[Op]
    pause: float = 0.0


def _cycle(items: Sequence[Any], offset: int) -> Callable[[int], Any]:
    return lambda n: items[(n + offset) % len(items)]


def read_case(cases: Sequence[str], offset: int, token: str) -> Op:
    pick = _cycle(cases, offset)

    async def op(conn: Connection, n: int) -> Any:
        answer = await conn.request("GET", f"/api/v1/cases/{pick(n)}", token=token)
        return "read_case", answer, {"case:read": 1}, None

    return op


def write_support_log(cases: Sequence[str], offset: int, token: str, tag: str) -> Op:
    pick = _cycle(cases, offset)

    async def op(conn: Connection, n: int) -> Any:
        answer = await conn.request(
            "POST",
            f"/api/v1/cases/{pick(n)}/support-logs",
            token=token,
            json_body={
                "occurred_on": clock.today().isoformat(),
                "kind": "conversation",
                "notes": f"谈心记录 {tag}-{n}",
            },
        )
        wrote = ("support_log", answer.json()["id"]) if answer.status == 201 else None
        return "support_log", answer, {"support_log:write": 1}, wrote

    return op


def write_home_visit(students: Sequence[str], offset: int, token: str, teacher: str) -> Op:
    pick = _cycle(students, offset)

    async def op(conn: Connection, n: int) -> Any:
        answer = await conn.request(
            "POST",
            f"/api/v1/students/{pick(n)}/home-visits",
            token=token,
            json_body={
                "visited_on": clock.today().isoformat(),
                "participant_ids": [teacher],
                "mode": "in_person",
                "notes": f"家访记录 {teacher[:8]}-{n}",
            },
        )
        wrote = ("home_visit", answer.json()["id"]) if answer.status == 201 else None
        return "home_visit", answer, {"home_visit:write": 1}, wrote

    return op


def review(results: Sequence[str], token: str, tag: str, *, support: bool) -> Op:
    pick = _cycle(results, 0)

    async def op(conn: Connection, n: int) -> Any:
        result_id = pick(n)
        notes = f"复核 {tag}-{n}"
        body: dict[str, Any] = {"outcome": "support" if support else "no_concern", "notes": notes}
        events = {"screening_result:review": 1}
        if support:
            body["guidance_for_teachers"] = f"请多关心 {tag}-{n}"
            events["guidance:write"] = 1
        answer = await conn.request(
            "POST", f"/api/v1/screening/results/{result_id}/review", token=token, json_body=body
        )
        # Known before the answer: a request left unanswered may still have stored it.
        return "review", answer, events, ("review", result_id, body["outcome"], notes)

    return op


def read_result(results: Sequence[str], offset: int, token: str) -> Op:
    pick = _cycle(results, offset)

    async def op(conn: Connection, n: int) -> Any:
        answer = await conn.request("GET", f"/api/v1/screening/results/{pick(n)}", token=token)
        return "read_result", answer, {"screening_result:read": 1}, None

    return op


def read_student(students: Sequence[str], offset: int, token: str) -> Op:
    pick = _cycle(students, offset)

    async def op(conn: Connection, n: int) -> Any:
        answer = await conn.request("GET", f"/api/v1/students/{pick(n)}", token=token)
        return "read_student", answer, {"student:read": 1}, None

    return op


def import_roster(school_id: str, class_names: Sequence[str], token: str, prefix: str) -> Op:
    async def op(conn: Connection, n: int) -> Any:
        numbers = [f"{prefix}{n:05d}{row:02d}" for row in range(ROSTER_ROWS)]
        answer = await conn.request(
            "POST",
            f"/api/v1/schools/{school_id}/students/import",
            token=token,
            body=roster_csv(list(class_names), numbers),
            content_type="text/csv",
        )
        created = answer.json()["created"] if answer.status == 200 else None
        events = {"student:create": ROSTER_ROWS, "student:import": 1}
        return "roster_import", answer, events, ("roster", school_id, created)

    return op


def mixed_clients(world: World) -> list[ClientSpec]:
    """The sixteen people of the mixed load (see the module's docstring)."""
    specs: list[ClientSpec] = []
    for s, school in enumerate(world.schools):
        for c, cls in enumerate(school.classes):
            cases = list(cls.cases.values())
            token, tag = cls.teacher.token, f"t{s}{c}"
            specs.append(
                ClientSpec(
                    cls.teacher,
                    [
                        read_case(cases, 0, token),
                        write_support_log(cases, 1, token, tag),
                        read_case(cases, 2, token),
                        write_home_visit(cls.students, 0, token, cls.teacher.id),
                    ],
                )
            )
        with_file = set(school.cases)
        results = sorted(school.results.items())
        for k, counselor in enumerate(school.counselors):
            # Each counselor reviews results of their own: no two clients touch one result.
            mine = results[k :: len(school.counselors)]
            linked = [r for student, r in mine if student in with_file]
            others = [r for student, r in mine if student not in with_file]
            token, tag = counselor.token, f"c{s}{k}"
            specs.append(
                ClientSpec(
                    counselor,
                    [
                        review(others, token, tag, support=False),
                        read_case(list(school.cases.values()), k, token),
                        review(linked, token, tag, support=True),
                        read_result([r for _, r in results], k, token),
                    ],
                )
            )
        class_names = [cls.name for cls in school.classes]
        specs.append(
            ClientSpec(
                school.leader,
                [import_roster(school.id, class_names, school.leader.token, f"L{s}")],
                pause=ROSTER_PAUSE_SECONDS,
            )
        )
    return specs


async def run_clients(
    specs: Sequence[ClientSpec],
    ports: Sequence[int],
    *,
    seconds: float,
    ledger: Ledger,
    stop: asyncio.Event | None = None,
) -> Ledger:
    """Each client on its own connection, to the ports by turns, for ``seconds``."""
    end = time.monotonic() + seconds

    async def client(index: int, spec: ClientSpec) -> None:
        conn = Connection(ports[index % len(ports)])
        try:
            for n in itertools.count():
                if time.monotonic() >= end or (stop is not None and stop.is_set()):
                    return
                op = spec.ops[n % len(spec.ops)]
                started = time.monotonic()
                name, answer, events, wrote = await op(conn, n // len(spec.ops))
                ledger.add(
                    Outcome(
                        client=index,
                        actor=spec.account.id,
                        op=name,
                        status=answer.status,
                        started=started,
                        seconds=time.monotonic() - started,
                        retry_after=answer.headers.get("retry-after"),
                        content_type=answer.headers.get("content-type"),
                        events=events,
                        wrote=wrote,
                    )
                )
                if spec.pause:
                    await asyncio.sleep(spec.pause)
        finally:
            await conn.close()

    await asyncio.gather(*(client(i, spec) for i, spec in enumerate(specs)))
    return ledger


def reading_clients(world: World) -> list[ClientSpec]:
    """Sixteen people who only read: their events all go through the audit appender."""
    specs: list[ClientSpec] = []
    for school in world.schools:
        for cls in school.classes:
            token = cls.teacher.token
            specs.append(
                ClientSpec(
                    cls.teacher,
                    [
                        read_case(list(cls.cases.values()), 0, token),
                        read_student(cls.students, 0, token),
                    ],
                )
            )
        results = sorted(school.results.values())
        for k, counselor in enumerate(school.counselors):
            specs.append(
                ClientSpec(
                    counselor,
                    [
                        read_case(list(school.cases.values()), k, counselor.token),
                        read_result(results, k, counselor.token),
                    ],
                )
            )
        students = [s for cls in school.classes for s in cls.students]
        specs.append(ClientSpec(school.leader, [read_student(students, 0, school.leader.token)]))
    return specs
