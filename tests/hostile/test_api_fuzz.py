"""Hostile input across the whole API (schemathesis against ``/schema/openapi.json``).

Every operation of the document, as each role of SPEC §3 (bearer tokens of the world's
accounts), with generated valid and invalid parameters and bodies: half of them aimed at
records that exist (``fuzzing.real_path_parameters``). Every answer must be documented
(status, media type, headers, body schema), no answer may be a server error, every error
is a problem document without internals or personal values, and no answer is a
spreadsheet table with a cell a spreadsheet would run. The run is derandomized: the same
requests each time (``fuzzing.EXAMPLES`` per operation and mode).

Each role runs on one database, the roles alternating between them so that each database
meets writers and readers alike (the application code is the same on both; what differs,
such as how a value out of a column's range is refused, is met by either half).
"""

from __future__ import annotations

import pytest
from schemathesis import GenerationMode

from tests.hostile.fuzzing import LAST, Run, load_schema, operations, real_path_parameters

ROLES = ("ct_a1", "teacher_a", "counselor_a", "leader_a", "admin", "auditor")
ON = ("postgresql", "sqlite")


@pytest.mark.parametrize(
    ("backend", "role"),
    [(ON[n % 2], role) for n, role in enumerate(ROLES)],
    indirect=["backend"],
)
def test_every_operation_answers_as_documented(client, scene, role, backend):
    schema = load_schema(client)
    run = Run(client, scene, role)
    real = real_path_parameters(scene, role)
    found = operations(schema)
    assert len(found) > 70  # the whole API, not a fraction of it
    for operation in found:
        if operation.label in LAST:
            # The token is still alive: nothing before the logout ended it.
            assert client.get("/api/v1/me", headers=run.headers).status_code == 200
        run.exercise(operation, GenerationMode.POSITIVE, real)
        run.exercise(operation, GenerationMode.NEGATIVE, real)
        run.exercise(operation, GenerationMode.POSITIVE, None)
    assert not run.failures, f"{len(run.failures)} failures:\n" + "\n".join(run.failures[:40])
    assert run.requests > 600


def test_the_document_declares_problems_uploads_and_public_operations(client):
    """What the fuzzing holds answers to (``casemgr.openapi``), checked on its own."""
    document = client.get("/schema/openapi.json").json()
    assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert responses["4XX"]["content"] == problem, (method, path)
            public = operation.get("security") == []
            assert public == (path in ("/health", "/ready", "/api/v1/auth/login")), path
            if not public:
                assert {"401", "403"} <= set(responses), (method, path)
            for status, answer in responses.items():
                if status.startswith("4"):
                    assert answer["content"] == problem, (method, path, status)
    uploads = [
        document["paths"][p]["post"]["requestBody"]["content"]
        for p in (
            "/api/v1/schools/{school_id}/students/import",
            "/api/v1/screening/rounds/{round_id}/results",
        )
    ]
    for content in uploads:
        assert {
            "text/csv",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        } <= set(content)
