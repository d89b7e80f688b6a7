"""Identity numbers: one normalisation for create, edit and lookup.

National IDs follow GB 11643-1999: 17 ASCII digits and an ASCII digit or ``X``, a check
digit, and an embedded birth date that must be the student's. Fullwidth digits typed with a
Chinese input method fold to ASCII (NFKC); other scripts' digits (Arabic-Indic, say) do not
and are refused, so no spelling of one ID can slip past duplicate checks or lookup.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")


def normalise_national_id(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip().upper()


def normalise_student_no(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def national_id_problem(value: str, birth_date: date | None = None) -> str | None:
    """What is wrong with a (normalised) national ID, or None when it is well formed.

    The message describes the rule broken, never the digits.
    """
    if len(value) != 18:
        return "must be 18 characters"
    if not _SHAPE.fullmatch(value):
        return "must be 17 digits (0-9) followed by a digit or X"
    total = sum(int(digit) * weight for digit, weight in zip(value[:17], _WEIGHTS, strict=True))
    if _CHECK_CHARS[total % 11] != value[17]:
        return "check digit does not match (GB 11643)"
    try:
        embedded = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "contains an impossible birth date"
    if birth_date is not None and embedded != birth_date:
        return "the birth date it contains differs from birth_date"
    return None
