"""Logs and metrics (issue 11, casemgr.observability) and the operations settings: what
they hold and what they never hold, and who may read the metrics."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from casemgr.observability import (
    JsonFormatter,
    RequestTelemetry,
    TextFormatter,
    configure_logging,
    metrics_allowed,
    read_metrics_token,
    request_id_var,
)
from casemgr.settings import Settings

TOKEN = "t" * 40


def record(message: str, *args: Any, exc: BaseException | None = None, **extra: Any) -> Any:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    entry = logging.LogRecord("casemgr.test", logging.ERROR, __file__, 1, message, args, exc_info)
    for name, value in extra.items():
        setattr(entry, name, value)
    return entry


def failing() -> BaseException:
    try:
        raise ValueError("the student 测试学生001 lives at 测试路1号")
    except ValueError as exc:
        return exc


def test_json_records_carry_fields_and_never_an_exception_message():
    token = request_id_var.set("abc123def456")
    try:
        line = JsonFormatter().format(record("unhandled %s", "ValueError", exc=failing()))
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "casemgr.test"
    assert entry["message"] == "unhandled ValueError" and entry["request_id"] == "abc123def456"
    assert entry["exc_type"] == "ValueError"
    assert entry["stack"] and entry["stack"][-1].endswith("in failing")
    assert entry["ts"].endswith("Z")
    assert "测试" not in line and "\n" not in line
    access = json.loads(
        JsonFormatter().format(
            record("GET /x 200", method="GET", route="/x", status=200, duration_ms=1.5)
        )
    )
    assert (access["method"], access["route"], access["status"], access["duration_ms"]) == (
        "GET",
        "/x",
        200,
        1.5,
    )


def test_text_records_leave_the_exception_message_out_too():
    line = TextFormatter().format(record("unhandled %s", "ValueError", exc=failing()))
    assert "exc_type=ValueError" in line and "in failing" in line
    assert "测试" not in line


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_configure_logging_sends_everything_to_stderr_as_json(restored_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("json")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
    logging.getLogger("casemgr").debug("not at info level")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["Started server process [1]"]


def test_access_records_name_the_route_template(client, world, caplog):
    student = world.students["a1_first"]
    with caplog.at_level(logging.INFO, logger="casemgr.access"):
        answer = client.get(f"/api/v1/students/{student}?secret=x", headers=world["ct_a1"].headers)
        client.get("/no/such/thing/测试")
        client.get("/health")  # a probe: debug level, below INFO
    assert answer.status_code == 200 and len(answer.headers["x-request-id"]) == 32
    access = [r for r in caplog.records if r.name == "casemgr.access"]
    routes = [(r.method, r.route, r.status) for r in access]
    assert routes == [
        ("GET", "/api/v1/students/{student_id}", 200),
        ("GET", "<unmatched>", 404),
    ]
    assert access[0].request_id == answer.headers["x-request-id"]
    logged = " ".join(JsonFormatter().format(r) for r in access)
    assert str(student) not in logged and "secret" not in logged
    assert "测试" not in logged and world["ct_a1"].token not in logged


def scope(client: str, request_id: bytes | None) -> dict[str, Any]:
    headers = [] if request_id is None else [(b"x-request-id", request_id)]
    return {"type": "http", "client": (client, 1234), "headers": headers}


def test_a_request_id_is_taken_from_a_trusted_proxy_only():
    proxy = ipaddress.ip_network("10.0.0.2/32")
    telemetry = RequestTelemetry(lambda *a: None, None, (proxy,))  # type: ignore[arg-type]
    assert telemetry._request_id(scope("10.0.0.2", b"req-1234-abcd")) == "req-1234-abcd"
    for peer, offered in (("10.0.0.9", b"req-1234-abcd"), ("10.0.0.2", b"bad id\n<x>")):
        chosen = telemetry._request_id(scope(peer, offered))
        assert chosen != offered.decode(errors="replace") and len(chosen) == 32


def test_who_may_read_the_metrics():
    allow = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.1.0.0/16"))
    digest = __import__("hashlib").sha256(TOKEN.encode()).digest()
    assert metrics_allowed("127.0.0.1", "", allow, None)
    assert metrics_allowed("10.1.2.3", "", allow, None)
    assert not metrics_allowed("10.2.0.1", "", allow, None)
    assert not metrics_allowed("testclient", "", allow, None)
    assert metrics_allowed("10.2.0.1", f"Bearer {TOKEN}", allow, digest)
    assert not metrics_allowed("10.2.0.1", f"Bearer {TOKEN}x", allow, digest)
    assert not metrics_allowed("10.2.0.1", f"Basic {TOKEN}", allow, digest)
    assert not metrics_allowed("10.2.0.1", f"Bearer {TOKEN}", allow, None)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_metrics_route_answers_the_token_holder(settings, world, tmp_path):
    from casemgr.app import create_app

    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with TestClient(
        create_app(dataclasses.replace(settings, metrics_token_file=token_file))
    ) as client:
        student = world.students["a1_first"]
        assert client.get(f"/api/v1/students/{student}", headers=world["ct_a1"].headers)
        refused = client.get("/metrics")  # the test client is no allowed network
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200 and scraped.headers["cache-control"] == "no-store"
    text = scraped.text
    assert 'route="/api/v1/students/{student_id}",status="200"' in text
    assert "casemgr_db_writer_turns_total" in text and "casemgr_db_pool_size" in text
    assert str(student) not in text and world["ct_a1"].token not in text


def test_the_metrics_token_file_must_be_private_and_long(tmp_path: Path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_metrics_token(path)
    path.chmod(0o600)
    assert read_metrics_token(path) is not None
    path.write_text("short")
    with pytest.raises(ValueError, match="32 characters"):
        read_metrics_token(path)
    with pytest.raises(ValueError, match="cannot read"):
        read_metrics_token(tmp_path / "missing")
    assert read_metrics_token(None) is None


def test_operations_settings_from_the_environment():
    settings = Settings.from_env(
        {
            "CASEMGR_SCHOOL_HOURS": "07:30-24:00",
            "CASEMGR_SCHOOL_DAYS": "mon-fri,sun",
            "CASEMGR_TIMEZONE": "Asia/Urumqi",
            "CASEMGR_UNUSUAL_READS_PER_HOUR": "80",
            "CASEMGR_LOG_FORMAT": "JSON",
            "CASEMGR_METRICS_ALLOW": "10.0.0.0/8, ::1",
            "CASEMGR_METRICS_TOKEN_FILE": "/run/secrets/metrics-token",
        }
    )
    assert settings.school_hours == (7 * 60 + 30, 24 * 60)
    assert settings.school_days == (0, 1, 2, 3, 4, 6)
    assert settings.timezone == "Asia/Urumqi" and settings.unusual_reads_per_hour == 80
    assert settings.log_format == "json"
    assert [str(n) for n in settings.metrics_allow] == ["10.0.0.0/8", "::1/128"]
    assert settings.metrics_token_file == Path("/run/secrets/metrics-token")
    defaults = Settings.from_env({})
    assert defaults.school_hours == (420, 1140) and defaults.school_days == (0, 1, 2, 3, 4)
    assert defaults.timezone == "Asia/Shanghai" and defaults.log_format == "text"
    assert defaults.shred_log_file == Path("var/shred-log.jsonl")
    assert [str(n) for n in defaults.metrics_allow] == ["127.0.0.1/32", "::1/128"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CASEMGR_SCHOOL_HOURS", "7-19", "07:00-19:00"),
        ("CASEMGR_SCHOOL_HOURS", "19:00-07:00", "before the end"),
        ("CASEMGR_SCHOOL_HOURS", "07:60-19:00", "07:00-19:00"),
        ("CASEMGR_SCHOOL_DAYS", "monday", "mon-fri"),
        ("CASEMGR_SCHOOL_DAYS", "fri-mon", "backwards"),
        ("CASEMGR_TIMEZONE", "Mars/Olympus", "time zone"),
        ("CASEMGR_LOG_FORMAT", "xml", "CASEMGR_LOG_FORMAT"),
        ("CASEMGR_UNUSUAL_DENIALS_PER_HOUR", "0", "at least 1"),
        ("CASEMGR_METRICS_ALLOW", "everyone", "CASEMGR_METRICS_ALLOW"),
    ],
)
def test_bad_operations_settings_are_refused(name, value, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({name: value})


def test_request_ids_are_fresh_for_each_request(client):
    first = client.get("/health").headers["x-request-id"]
    second = client.get("/health").headers["x-request-id"]
    assert first != second and uuid.UUID(hex=first)
