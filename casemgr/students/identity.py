"""Checks on identity numbers (GB 11643-1999 citizen identification numbers)."""

from __future__ import annotations

from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


def normalise_national_id(value: str) -> str:
    return value.strip().upper()


def national_id_problem(value: str) -> str | None:
    """What is wrong with a national ID, or None when it is well formed.

    The message describes the rule broken, never the digits.
    """
    if len(value) != 18:
        return "must be 18 characters"
    if not value[:17].isdigit() or not (value[17].isdigit() or value[17] == "X"):
        return "must be 17 digits followed by a digit or X"
    total = sum(int(digit) * weight for digit, weight in zip(value[:17], _WEIGHTS, strict=True))
    if _CHECK_CHARS[total % 11] != value[17]:
        return "check digit does not match (GB 11643)"
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "contains an impossible birth date"
    return None
