"""Screening instruments as data: a definition file says how answers become scores.

A definition (TOML, one file per instrument; the built-in ones are in ``definitions/``)
gives the number of items, the answer range, reverse-scored items, the missing-answer
rule, scales with their bands, the total, critical items that raise a flag whatever the
score, and the rule for when a result needs a counselor's review::

    code = "phq9"
    items = 9
    answers = { min = 0, max = 3 }
    missing = "reject"            # or "prorate" (scales need ``min_answered`` answers)
    reverse = []                  # item numbers scored as (max + min - answer)
    [total]
    score = "sum"                 # or "sum_of_scales" with scales = [...]
    bands = [{ max = 4, band = "minimal" }, ...]
    [[critical]]                  # raw answer to ``item`` >= ``min`` raises ``flag``
    item = 9
    min = 1
    flag = "critical_item"
    [[needs_review]]              # any rule that holds sends the result to review
    scale = "total"
    min = 10                      # or bands = ["borderline", "high"], or flag = "..."

A school adds its own instrument by dropping a file into ``CASEMGR_INSTRUMENTS_DIR``; a
file that breaks a rule is refused with a message naming the file and the rule, and the
others still load. No code, and no item text: only how to score.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import floor
from pathlib import Path
from typing import Literal

import msgspec

BUILT_IN_DIR = Path(__file__).resolve().parent / "definitions"
CODE_PATTERN = r"^[a-z][a-z0-9_]{1,31}$"
TOTAL = "total"


class InstrumentError(ValueError):
    """A definition file that cannot be used; the message says which rule it breaks."""


class ScoringError(ValueError):
    """A row of answers the instrument refuses (missing or out-of-range answers...)."""


# -- the file format ------------------------------------------------------------------


class _Band(msgspec.Struct, forbid_unknown_fields=True):
    max: int
    band: str


class _Range(msgspec.Struct, forbid_unknown_fields=True):
    min: int
    max: int


class _Scale(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    items: list[int]
    bands: list[_Band]
    min_answered: int | None = None
    required: bool = False


class _Total(msgspec.Struct, forbid_unknown_fields=True):
    bands: list[_Band]
    score: Literal["sum", "sum_of_scales"] = "sum"
    scales: list[str] = []


class _Critical(msgspec.Struct, forbid_unknown_fields=True):
    item: int
    min: int
    flag: str


class _ReviewRule(msgspec.Struct, forbid_unknown_fields=True):
    scale: str | None = None
    min: int | None = None
    bands: list[str] | None = None
    flag: str | None = None


class _Definition(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    name: str
    items: int
    answers: _Range
    total: _Total
    missing: Literal["reject", "prorate"] = "reject"
    reverse: list[int] = []
    scales: list[_Scale] = []
    critical: list[_Critical] = []
    needs_review: list[_ReviewRule] = []


# -- the scoring model ----------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """What scoring one row of answers produced."""

    answers: list[int | None]
    total: int
    band: str
    scales: dict[str, int | None]
    scale_bands: dict[str, str | None]
    flags: list[str]
    needs_review: bool

    @property
    def status(self) -> str:
        return "pending_review" if self.needs_review else "below_threshold"


def _round_half_up(value: Fraction) -> int:
    return floor(value + Fraction(1, 2))


def _band_of(bands: Sequence[_Band], score: int) -> str:
    for band in bands:
        if score <= band.max:
            return band.band
    raise ScoringError("score above the highest band")  # excluded by validation


@dataclass(frozen=True)
class Instrument:
    code: str
    name: str
    items: int
    answer_min: int
    answer_max: int
    missing: str
    reverse: frozenset[int]
    scales: tuple[_Scale, ...]
    total: _Total
    critical: tuple[_Critical, ...]
    needs_review: tuple[_ReviewRule, ...]
    source: str

    def describe(self) -> dict[str, object]:
        """What ``GET /api/v1/screening/instruments`` shows: the shape, never item text."""
        return {
            "code": self.code,
            "name": self.name,
            "items": self.items,
            "answer_min": self.answer_min,
            "answer_max": self.answer_max,
            "missing": self.missing,
            "scales": [s.name for s in self.scales],
            "built_in": self.source == "built-in",
        }

    def _scale_score(self, scale: _Scale, values: Sequence[int | None]) -> int | None:
        answered = [values[item - 1] for item in scale.items if values[item - 1] is not None]
        if self.missing == "reject":
            return sum(v for v in answered if v is not None)
        if len(answered) < (scale.min_answered or len(scale.items)):
            return None
        mean = Fraction(sum(v for v in answered if v is not None), len(answered))
        return _round_half_up(mean * len(scale.items))

    def score(self, answers: Sequence[int | None]) -> Scored:
        """Score one row; raise ``ScoringError`` (naming the item) when it must be refused."""
        if len(answers) != self.items:
            raise ScoringError(f"expected {self.items} answers, got {len(answers)}")
        for number, answer in enumerate(answers, start=1):
            if answer is None:
                if self.missing == "reject":
                    raise ScoringError(f"q{number}: answer missing")
                continue
            if isinstance(answer, bool) or not isinstance(answer, int):
                raise ScoringError(f"q{number}: not a whole number")
            if not self.answer_min <= answer <= self.answer_max:
                raise ScoringError(
                    f"q{number}: answer out of range {self.answer_min}-{self.answer_max}"
                )
        flip = self.answer_min + self.answer_max
        values = [
            None if a is None else (flip - a if n in self.reverse else a)
            for n, a in enumerate(answers, start=1)
        ]
        scales = {s.name: self._scale_score(s, values) for s in self.scales}
        for scale in self.scales:
            if scale.required and scales[scale.name] is None:
                raise ScoringError(f"{scale.name}: too few answers to score")
        if self.total.score == "sum":
            total: int | None = sum(v for v in values if v is not None)
        else:
            parts = [scales[name] for name in self.total.scales]
            total = None if any(p is None for p in parts) else sum(p for p in parts if p)
        if total is None:
            raise ScoringError("total: too few answers to score")
        scale_bands = {
            s.name: None if scales[s.name] is None else _band_of(s.bands, scales[s.name] or 0)
            for s in self.scales
        }
        band = _band_of(self.total.bands, total)
        flags = sorted(
            {
                c.flag
                for c in self.critical
                if answers[c.item - 1] is not None and (answers[c.item - 1] or 0) >= c.min
            }
        )
        return Scored(
            answers=list(answers),
            total=total,
            band=band,
            scales=scales,
            scale_bands=scale_bands,
            flags=flags,
            needs_review=any(
                self._holds(rule, total, band, scales, scale_bands, flags)
                for rule in self.needs_review
            ),
        )

    @staticmethod
    def _holds(
        rule: _ReviewRule,
        total: int,
        band: str,
        scales: dict[str, int | None],
        scale_bands: dict[str, str | None],
        flags: list[str],
    ) -> bool:
        if rule.flag is not None:
            return rule.flag in flags
        score = total if rule.scale == TOTAL else scales.get(rule.scale or "")
        which = band if rule.scale == TOTAL else scale_bands.get(rule.scale or "")
        if rule.min is not None and score is not None and score >= rule.min:
            return True
        return rule.bands is not None and which in rule.bands


# -- loading and checking definitions -----------------------------------------------------


def _check_bands(where: str, bands: Sequence[_Band], highest: int) -> None:
    if not bands:
        raise InstrumentError(f"{where}.bands: give at least one band")
    previous = -1
    names = set()
    for band in bands:
        if band.max <= previous:
            raise InstrumentError(f"{where}.bands: each band's max must exceed the one before")
        if not band.band or band.band in names:
            raise InstrumentError(f"{where}.bands: band names must be given and distinct")
        previous = band.max
        names.add(band.band)
    if previous < highest:
        raise InstrumentError(
            f"{where}.bands: the last band must reach the highest possible score ({highest})"
        )


def _instrument(definition: _Definition, source: str) -> Instrument:
    d = definition
    if not re.match(CODE_PATTERN, d.code):
        raise InstrumentError("code: 2-32 characters, lower-case letters, digits and _")
    if not d.name.strip():
        raise InstrumentError("name: must not be blank")
    if not 1 <= d.items <= 200:
        raise InstrumentError("items: between 1 and 200")
    if not 0 <= d.answers.min < d.answers.max <= 100:
        raise InstrumentError("answers: need 0 <= min < max <= 100")

    def check_items(where: str, numbers: Iterable[int]) -> None:
        numbers = list(numbers)
        if any(not 1 <= n <= d.items for n in numbers):
            raise InstrumentError(f"{where}: item numbers run from 1 to {d.items}")
        if len(set(numbers)) != len(numbers):
            raise InstrumentError(f"{where}: an item is listed twice")

    check_items("reverse", d.reverse)
    names = set()
    for scale in d.scales:
        where = f"scales.{scale.name}"
        if not scale.name or scale.name == TOTAL or scale.name in names:
            raise InstrumentError("scales: names must be given, distinct and not 'total'")
        names.add(scale.name)
        if not scale.items:
            raise InstrumentError(f"{where}.items: list the scale's items")
        check_items(f"{where}.items", scale.items)
        if d.missing == "prorate" and not 1 <= (scale.min_answered or 0) <= len(scale.items):
            raise InstrumentError(
                f"{where}.min_answered: prorated scales need 1 to {len(scale.items)} answered"
            )
        _check_bands(where, scale.bands, len(scale.items) * d.answers.max)
    if d.total.score == "sum":
        if d.total.scales:
            raise InstrumentError("total.scales: only for score = 'sum_of_scales'")
        highest = d.items * d.answers.max
    else:
        unknown = [n for n in d.total.scales if n not in names]
        if not d.total.scales or unknown:
            raise InstrumentError("total.scales: name existing scales to add up")
        highest = sum(len(s.items) * d.answers.max for s in d.scales if s.name in d.total.scales)
    _check_bands("total", d.total.bands, highest)
    flags = set()
    for critical in d.critical:
        check_items("critical.item", [critical.item])
        if not d.answers.min <= critical.min <= d.answers.max or not critical.flag:
            raise InstrumentError("critical: min must be a possible answer, and flag given")
        flags.add(critical.flag)
    if not d.needs_review:
        raise InstrumentError("needs_review: give at least one rule")
    for rule in d.needs_review:
        if rule.flag is not None:
            if rule.flag not in flags or rule.scale or rule.min is not None or rule.bands:
                raise InstrumentError("needs_review: a flag rule names a critical flag only")
            continue
        if rule.scale != TOTAL and rule.scale not in names:
            raise InstrumentError("needs_review.scale: 'total' or the name of a scale")
        if (rule.min is None) == (rule.bands is None):
            raise InstrumentError("needs_review: give either min or bands")
        bands = (
            d.total.bands
            if rule.scale == TOTAL
            else next(s.bands for s in d.scales if s.name == rule.scale)
        )
        if rule.bands is not None and not set(rule.bands) <= {b.band for b in bands}:
            raise InstrumentError("needs_review.bands: name bands of that scale")
    return Instrument(
        code=d.code,
        name=d.name.strip(),
        items=d.items,
        answer_min=d.answers.min,
        answer_max=d.answers.max,
        missing=d.missing,
        reverse=frozenset(d.reverse),
        scales=tuple(d.scales),
        total=d.total,
        critical=tuple(d.critical),
        needs_review=tuple(d.needs_review),
        source=source,
    )


def load_definition(path: Path, source: str = "local") -> Instrument:
    """Read and check one definition file; ``InstrumentError`` names the file and rule."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        definition = msgspec.convert(raw, _Definition)
        instrument = _instrument(definition, source)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InstrumentError(f"{path.name}: not a readable TOML file ({exc})") from None
    except msgspec.ValidationError as exc:
        raise InstrumentError(f"{path.name}: {exc}") from None
    except InstrumentError as exc:
        raise InstrumentError(f"{path.name}: {exc}") from None
    if path.stem != instrument.code:
        raise InstrumentError(
            f"{path.name}: the file must be named after its code ({instrument.code}.toml)"
        )
    return instrument


@dataclass(frozen=True)
class Catalogue:
    """The instruments in use: the built-in ones and a school's own, by code."""

    instruments: dict[str, Instrument]
    problems: list[str]

    def get(self, code: str) -> Instrument | None:
        return self.instruments.get(code)


def load_catalogue(local_dir: Path | None = None) -> Catalogue:
    """Built-in definitions, then local ones (which may not replace a built-in code)."""
    instruments: dict[str, Instrument] = {}
    problems: list[str] = []
    for path in sorted(BUILT_IN_DIR.glob("*.toml")):
        instrument = load_definition(path, "built-in")  # a broken built-in is a bug: raise
        instruments[instrument.code] = instrument
    if local_dir is not None and local_dir.is_dir():
        for path in sorted(local_dir.glob("*.toml")):
            try:
                instrument = load_definition(path)
            except InstrumentError as exc:
                problems.append(str(exc))
                continue
            if instrument.code in instruments:
                problems.append(f"{path.name}: code {instrument.code} is taken by a built-in")
                continue
            instruments[instrument.code] = instrument
    return Catalogue(instruments, problems)
