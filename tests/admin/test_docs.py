"""A newcomer follows only the README and ``docs/`` (acceptance 7): the commands of
``make run`` give the demo logins, and the newcomer block of ``docs/api.md``, run as
written against a served app, finds a class id and reads its roster with ``curl``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from casemgr.settings import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs" / "api.md"
NEWCOMER = re.compile(r"<!-- newcomer: start -->\s*```sh\n(.*?)```\s*<!-- newcomer: end -->", re.S)


def casemgr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casemgr", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], str]]:
    """What `make run` does: init, demo if empty, serve. Yields (base URL, env, stderr)."""
    env = {
        **os.environ,
        "CASEMGR_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'casemgr.db'}",
        "CASEMGR_KEYS_DIR": str(tmp_path / "keys"),
        "CASEMGR_VAR_DIR": str(tmp_path / "var"),
        "CASEMGR_AUDIT_CHECKPOINT_SECONDS": "0",
    }
    assert casemgr(env, "init").returncode == 0
    seeded = casemgr(env, "demo", "--if-empty")
    assert seeded.returncode == 0, seeded.stderr
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "casemgr", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the service did not start")
        yield base, env, seeded.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def printed(stderr: str, username: str) -> dict[str, str]:
    """The values `make run` printed under one demo login, as a person reads them."""
    block = re.split(r"\n(?=  \S|\n|$)", stderr.split(f"username {username}\n", 1)[1])[0]
    values = {}
    for line in block.splitlines():
        name, _, value = line.strip().partition("  ")
        values[name.strip()] = value.strip()
    return values


@pytest.mark.slow
def test_a_newcomer_reads_a_roster_following_the_docs(served):
    base, env, stderr = served
    login = printed(stderr, "demo.classteacher")
    assert re.fullmatch(r"\S{12,}", login["password"])
    class_id = login["class"].rsplit("id ", 1)[1]
    # The counselor's TOTP secret stands on one line of its own, whole.
    assert re.fullmatch(r"[A-Z2-7]{32}", printed(stderr, "demo.counselor")["TOTP secret"])
    # And `--show-logins` shows the same again later.
    again = casemgr(env, "demo", "--show-logins")
    assert again.returncode == 0
    assert printed(again.stderr, "demo.classteacher")["password"] == login["password"]

    block = NEWCOMER.search(DOCS.read_text(encoding="utf-8"))
    assert block is not None, "docs/api.md lost its newcomer block"
    script = re.sub(
        r"^PASSWORD='<[^>]*>'$",
        f"PASSWORD='{login['password']}'",
        block.group(1),
        flags=re.M,
    )
    assert login["password"] in script
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"BASE={base}\n{script}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answers, text, decoder = [], result.stdout.strip(), json.JSONDecoder()
    while text:  # curl prints each answer without a line break after it
        value, end = decoder.raw_decode(text)
        answers.append(value)
        text = text[end:].strip()
    me, roster = answers[0], answers[-1]
    assert me["user"]["username"] == "demo.classteacher"
    assert me["classes"][0]["id"] == class_id
    assert roster["items"] and {"id", "code", "full_name", "student_no"} <= set(roster["items"][0])
    assert all("示例" in item["full_name"] for item in roster["items"])


def test_the_readme_points_newcomers_to_the_docs():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/api.md" in readme and "docs/operations.md" in readme
    assert (PROJECT_ROOT / "docs" / "operations.md").exists()
