"""A school's own instruments: loaded at start-up from ``CASEMGR_INSTRUMENTS_DIR``, broken
definitions logged by file and rule while the service keeps serving the others, and
``casemgr instruments check`` for checking a directory before deploying it."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from casemgr.settings import Settings
from tests.screening.helpers import add_students, create_round, grant_all, result_ids, table, upload

LOCAL = """
code = "local_mood"
name = "本地情绪量表"
items = 4
answers = { min = 1, max = 4 }
reverse = [2]
[total]
score = "sum"
bands = [{ max = 8, band = "typical" }, { max = 16, band = "raised" }]
[[needs_review]]
scale = "total"
bands = ["raised"]
"""
BROKEN = 'code = "broken_one"\nname = "x"\nitems = 3\n'


@pytest.fixture
def instruments_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "instruments"
    folder.mkdir()
    (folder / "local_mood.toml").write_text(LOCAL, encoding="utf-8")
    (folder / "broken_one.toml").write_text(BROKEN, encoding="utf-8")
    return folder


@pytest.fixture
def local_client(settings, instruments_dir, caplog):
    from litestar.testing import TestClient

    from casemgr.app import create_app

    with caplog.at_level(logging.ERROR, logger="casemgr.screening"):
        app = create_app(dataclasses.replace(settings, instruments_dir=instruments_dir))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_the_setting_reads_the_environment(tmp_path):
    assert Settings.from_env({}).instruments_dir == Path("var/instruments")
    chosen = Settings.from_env({"CASEMGR_INSTRUMENTS_DIR": str(tmp_path)})
    assert chosen.instruments_dir == tmp_path


def test_local_instruments_are_served_and_broken_ones_logged(
    local_client, world, db, caplog, instruments_dir
):
    problems = [
        r.getMessage() for r in caplog.get_records("setup") if r.name == "casemgr.screening"
    ]
    assert len(problems) == 1
    assert problems[0].startswith("instrument definition refused: broken_one.toml: ")
    listed = local_client.get("/api/v1/screening/instruments", headers=world["counselor_a"].headers)
    assert listed.status_code == 200
    codes = {item["code"]: item for item in listed.json()["items"]}
    assert set(codes) == {"phq9", "gad7", "sdq_self", "local_mood"}
    assert codes["local_mood"]["built_in"] is False and codes["local_mood"]["items"] == 4
    assert "text" not in json.dumps(listed.json())  # scoring only, never item text

    numbers = add_students(db, world.class_a1, 2, prefix="L")
    round_id = create_round(local_client, world, instrument="local_mood")
    grant_all(db, round_id, list(numbers.values()))
    n1, n2 = numbers
    response = upload(
        local_client, world, round_id, table([(n1, [4, 1, 4, 4]), (n2, [1, 4, 1, 1])], items=4)
    )
    assert response.status_code == 200, response.text
    results = result_ids(db, round_id)
    high = local_client.get(
        f"/api/v1/screening/results/{results[numbers[n1]]}", headers=world["counselor_a"].headers
    ).json()
    assert (high["total"], high["band"], high["status"]) == (16, "raised", "pending_review")
    refused = upload(local_client, world, round_id, table([(n1, [0, 1, 1, 1])], items=4))
    assert refused.json()["rejected"][0]["error"].startswith("q1: answer out of range 1-4")


def test_a_round_needs_a_known_instrument(client, world):
    response = client.post(
        "/api/v1/screening/rounds",
        json={
            "school_id": str(world.school_a),
            "name": "x",
            "instrument": "local_mood",
            "school_year": "2026-2027",
            "class_ids": [str(world.class_a1)],
            "opens_on": "2026-09-01",
            "closes_on": "2026-09-30",
        },
        headers=world["counselor_a"].headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "instrument", "message": "no such instrument"}]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"class_ids": []}, "class_ids"),
        ({"school_year": "2026-2028"}, "school_year"),
        ({"closes_on": "2026-08-01"}, "closes_on"),
        ({"name": "   "}, "name"),
        ({"class_ids": ["B1"]}, "class_ids[0]"),
        ({"class_ids": ["A1", "A1"]}, "class_ids"),
        ({"school_year": "2025-2026"}, "class_ids[0]"),
        ({"name": "春\u202e季"}, "name"),
    ],
)
def test_bad_rounds_are_refused_naming_the_field(client, world, db, change, field):
    body = {
        "school_id": str(world.school_a),
        "name": "春季普查",
        "instrument": "phq9",
        "school_year": "2026-2027",
        "class_ids": [str(world.class_a1)],
        "opens_on": "2026-09-01",
        "closes_on": "2026-09-30",
    }
    names = {"A1": str(world.class_a1), "B1": str(world.class_b1)}
    if "class_ids" in change:
        change = {"class_ids": [names.get(c, c) for c in change["class_ids"]]}
    response = client.post(
        "/api/v1/screening/rounds", json={**body, **change}, headers=world["counselor_a"].headers
    )
    assert response.status_code == 422, response.text
    assert field in response.text
    assert db.execute("SELECT count(*) FROM screening_rounds") == [(0,)]


def test_a_round_of_another_school_is_out_of_reach(client, world):
    response = client.post(
        "/api/v1/screening/rounds",
        json={
            "school_id": str(world.school_b),
            "name": "x",
            "instrument": "phq9",
            "school_year": "2026-2027",
            "class_ids": [str(world.class_b1)],
            "opens_on": "2026-09-01",
            "closes_on": "2026-09-30",
        },
        headers=world["counselor_a"].headers,
    )
    assert response.status_code == 404


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casemgr", "instruments", "check", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_instruments_check_prints_problems_and_exits_1(instruments_dir, tmp_path):
    env = {"CASEMGR_VAR_DIR": str(tmp_path / "var")}
    done = _cli(str(instruments_dir), env=env)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"] is False
    assert "local_mood" in result["instruments"]
    assert len(result["problems"]) == 1 and result["problems"][0].startswith("broken_one.toml: ")
    assert "broken_one.toml" in done.stderr

    (instruments_dir / "broken_one.toml").unlink()
    env["CASEMGR_INSTRUMENTS_DIR"] = str(instruments_dir)
    done = _cli(env=env)  # the configured directory by default
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] is True
