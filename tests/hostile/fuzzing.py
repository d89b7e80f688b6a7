"""Generated requests for every operation of ``/schema/openapi.json`` (schemathesis).

The configuration of the run lives here: which checks every answer must pass, how many
examples each operation gets, and the fixed path parameters that send half of the
requests to records that exist. Requests go through the same Litestar ``TestClient`` as
every other test (one event loop, one lifespan), and schemathesis judges the answers.
"""

from __future__ import annotations

import contextlib
import json
import re
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from casemgr.tabular import SPREADSHEET_TYPES, unneutralised_cells
from tests.access.scene import Scene, student_values

# Examples per operation and mode: positive with real ids, negative with real ids,
# positive with generated ids. Derandomized: the same requests every run.
EXAMPLES = 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PROBLEM = "application/problem+json"
# What a stack trace or a lower layer's message looks like in a body.
INTERNALS = re.compile(
    r"Traceback|File \"|sqlalchemy|asyncpg|aiosqlite|sqlite3|psycopg|litestar\.|msgspec\."
    r"|casemgr\.|IntegrityError|OperationalError|\bat 0x[0-9a-f]+",
    re.IGNORECASE,
)
CLOSED_SET_WORD = re.compile(r"[a-z_]+")
BASE_URL = "http://testserver.local"
# The last operations run: logging out ends the token the rest of the run uses.
LAST = ("POST /api/v1/auth/logout",)


def load_schema(client: Any) -> Any:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return schemathesis.openapi.from_dict(response.json())


def operations(schema: Any) -> list[Any]:
    found = [result.ok() for result in schema.get_all_operations()]
    return sorted(found, key=lambda op: (op.label in LAST, op.label))


def real_path_parameters(scene: Scene, role: str) -> dict[str, str]:
    """Path parameters that name existing records (of the caller's school where it has
    one): the generated requests then reach the handlers' logic, not only their 404s."""
    world = scene.world
    own = scene.records["own"]
    return {
        "student_id": str(own.student),
        "class_id": str(world.class_a1),
        "school_id": str(world.school_a),
        "case_id": own.case,
        "category_id": own.category,
        "pairing_id": own.pairing,
        "round_id": own.round,
        "result_id": own.result,
        "grant_id": scene.grants["ct_a1"],
        "task_id": scene.tasks.get(role, str(uuid.uuid4())),
        "session_id": scene.sessions[role],
        "user_id": str(world["teacher_a2"].id),
        "transfer_id": str(uuid.uuid4()),
    }


def fill(path: str, ids: dict[str, str]) -> str:
    """``path`` (a path format) with ``ids`` where it names them, a new UUID elsewhere."""
    names = [name for _, name, _, _ in string.Formatter().parse(path) if name]
    return path.format(**{name: ids.get(name, str(uuid.uuid4())) for name in names})


def _string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _string_values(item)


@dataclass
class Run:
    """One role's pass over every operation; failures are collected, not raised at once."""

    client: Any
    scene: Scene
    role: str
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    content_types: set[str] = field(default_factory=set)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.scene.world[self.role].headers)

    def personal_values(self) -> list[str]:
        """Values no error may carry: every student's personal fields, and the texts of
        the scene's records (they all hold the scene's marker)."""
        values = [v for n in (1, 2, 3, 4, 5) for v in student_values(n)]
        return [*values, "ZQXSCENE"]

    def send(self, case: Case) -> Any:
        kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=self.headers)
        body: dict[str, Any] = {}
        if "json" in kwargs:
            body["content"] = json.dumps(kwargs["json"], ensure_ascii=False).encode()
        elif kwargs.get("data") is not None:
            data = kwargs["data"]
            body["content"] = data.encode() if isinstance(data, str) else data
        self.requests += 1
        return self.client.request(
            kwargs["method"],
            kwargs["url"],
            headers=kwargs.get("headers"),
            params=kwargs.get("params") or None,
            **body,
        )

    def check_errors_and_tables(self, case: Case, response: Any) -> list[str]:
        """What schemathesis cannot know: errors are problem documents without internals
        or personal values, and no table leaves with a cell a spreadsheet would run."""
        problems = []
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        self.content_types.add(media_type)
        if response.status_code >= 400:
            if media_type != PROBLEM:
                problems.append(f"error answered as {media_type!r}, not {PROBLEM}")
            else:
                document = response.json()
                if document.get("status") != response.status_code:
                    problems.append("the problem's status differs from the answer's")
            if INTERNALS.search(response.text):
                problems.append("internals in an error")
            # Free text that was sent (closed-set words such as "monitor" may be named).
            sent = [
                v
                for v in _string_values(_sent_json(case))
                if len(v.strip()) >= 6 and not CLOSED_SET_WORD.fullmatch(v)
            ]
            for value in [*self.personal_values(), *sent]:
                if value in response.text or json.dumps(value)[1:-1] in response.text:
                    problems.append(f"an error echoes a value ({len(value)} characters)")
                    break
        if media_type in SPREADSHEET_TYPES:
            cells = unneutralised_cells(response.content, media_type)
            if cells:
                problems.append(f"{media_type} with cells a spreadsheet would run: {cells[:3]}")
        return problems

    def exercise(self, operation: Any, mode: GenerationMode, fixed: dict[str, str] | None) -> None:
        path_parameters = None
        if fixed is not None:
            names = [p.name for p in operation.path_parameters]
            path_parameters = {name: fixed[name] for name in names if name in fixed}
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
        checks: list[Callable[..., Any]] = list(CHECKS)
        if mode is GenerationMode.NEGATIVE:
            checks.append(negative_data_rejection)

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
        @given(case=strategy)
        def one(case: Case) -> None:
            response = self.send(case)
            found = self.check_errors_and_tables(case, response)
            try:
                case.validate_response(response, checks=checks)
            except (AssertionError, BaseExceptionGroup) as failure:
                found.append(str(failure).split("Reproduce with")[0].strip())
            for problem in found:
                self.failures.append(
                    f"{self.role} {operation.label} [{mode.value}] -> "
                    f"{response.status_code}: {problem}\n    sent: {_describe(case)}"
                )

        # Unsatisfiable: nothing negative to generate (an operation without inputs).
        with contextlib.suppress(Unsatisfiable):
            one()


def _sent_json(case: Case) -> Any:
    body = case.body
    return body if isinstance(body, (dict, list, str)) else None


def _describe(case: Case) -> str:
    body = case.body if isinstance(case.body, (dict, list, str, int, float)) else "<binary>"
    text = json.dumps(
        {"path": case.path_parameters, "query": case.query, "body": body},
        ensure_ascii=False,
        default=str,
    )
    return text[:300]
