"""Instruments as data: every published vector scores exactly, and broken definitions are
refused with a message naming the file and the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casemgr.screening.instruments import (
    InstrumentError,
    ScoringError,
    load_catalogue,
    load_definition,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "scoring.json").read_text("utf-8"))
CASES = [(code, n, case) for code, cases in VECTORS.items() for n, case in enumerate(cases)]


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


def test_the_built_in_instruments_load(catalogue):
    assert set(catalogue.instruments) == {"phq9", "gad7", "sdq_self"}
    assert catalogue.problems == []


@pytest.mark.parametrize(("code", "n", "case"), CASES, ids=[f"{c}-{n}" for c, n, _ in CASES])
def test_every_vector(catalogue, code, n, case):
    instrument = catalogue.get(code)
    if case.get("rejected"):
        with pytest.raises(ScoringError):
            instrument.score(case["answers"])
        return
    scored = instrument.score(case["answers"])
    assert scored.total == case["total"]
    assert scored.band == case["band"]
    assert scored.flags == case["flags"]
    assert scored.needs_review == case["needs_review"]
    assert scored.status == ("pending_review" if case["needs_review"] else "below_threshold")
    if "scales" in case:
        assert scored.scales == case["scales"]
        assert scored.scale_bands == case["scale_bands"]
    else:
        assert scored.scales == {}


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([0] * 8, "expected 9 answers"),
        ([0] * 8 + [4], "q9: answer out of range 0-3"),
        ([0] * 8 + [-1], "q9: answer out of range"),
        ([0, None] + [0] * 7, "q2: answer missing"),
        ([0] * 8 + [True], "q9: not a whole number"),
    ],
)
def test_bad_rows_name_the_item(catalogue, answers, message):
    with pytest.raises(ScoringError, match=message):
        catalogue.get("phq9").score(answers)


LOCAL = """
code = "local_anxiety"
name = "本地焦虑量表"
items = 4
answers = {{ min = 1, max = 4 }}
reverse = [2]
[total]
score = "sum"
bands = [{{ max = 8, band = "typical" }}, {{ max = {top}, band = "raised" }}]
[[needs_review]]
scale = "total"
bands = ["raised"]
"""


def test_a_school_adds_its_own_instrument_without_code(tmp_path):
    (tmp_path / "local_anxiety.toml").write_text(LOCAL.format(top=16), encoding="utf-8")
    catalogue = load_catalogue(tmp_path)
    assert catalogue.problems == []
    instrument = catalogue.get("local_anxiety")
    assert instrument.describe()["built_in"] is False
    low = instrument.score([1, 4, 1, 1])  # item 2 reversed: 4 -> 1
    assert (low.total, low.band, low.needs_review) == (4, "typical", False)
    high = instrument.score([4, 1, 4, 4])
    assert (high.total, high.band, high.status) == (16, "raised", "pending_review")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (LOCAL.format(top=15), "the last band must reach the highest possible score (16)"),
        (LOCAL.format(top=16).replace("reverse = [2]", "reverse = [5]"), "reverse"),
        (LOCAL.format(top=16).replace('bands = ["raised"]', 'bands = ["nope"]'), "bands"),
        (LOCAL.format(top=16).replace("items = 4", "items = 4\ncolour = 'red'"), "colour"),
        (LOCAL.format(top=16).replace("max = 4 }", "max = 0 }"), "answers"),
        ("code = [", "not a readable TOML file"),
        (LOCAL.format(top=16).split("[[needs_review]]")[0], "needs_review"),
    ],
    ids=["bands-short", "reverse-range", "unknown-band", "unknown-key", "range", "toml", "no-rule"],
)
def test_invalid_definitions_are_refused_with_a_clear_message(tmp_path, text, rule):
    path = tmp_path / "local_anxiety.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InstrumentError) as caught:
        load_definition(path)
    assert str(caught.value).startswith("local_anxiety.toml: ")
    assert rule in str(caught.value)
    # The catalogue keeps the built-ins and reports the broken file.
    catalogue = load_catalogue(tmp_path)
    assert "local_anxiety" not in catalogue.instruments
    assert "phq9" in catalogue.instruments
    assert len(catalogue.problems) == 1


def test_a_local_file_cannot_replace_a_built_in(tmp_path):
    text = (Path(__file__).parents[2] / "casemgr/screening/definitions/phq9.toml").read_text()
    (tmp_path / "phq9.toml").write_text(text.replace("min = 10", "min = 99"), encoding="utf-8")
    catalogue = load_catalogue(tmp_path)
    assert catalogue.get("phq9").needs_review[0].min == 10
    assert "taken by a built-in" in catalogue.problems[0]
