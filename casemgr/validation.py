"""The text rule every input passes (SPEC §7), whatever carried it: JSON, CSV, a form.

Text fields refuse invisible characters that change what a reader sees from what is
stored: NUL and other control characters (Unicode category Cc), format characters (Cf:
zero-width joiners, soft hyphens, bidirectional overrides...) and lone surrogates (Cs,
which no encoder can store). Fields that hold prose (:data:`MULTILINE_FIELDS`) keep line
breaks and tabs and the format characters scripts and emoji need, but still refuse the
bidirectional overrides and isolates that can make a note read differently from what it
says (U+202A–U+202E, U+2066–U+2069).

Messages name the rule, never the value: the value may be personal data.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

from casemgr.errors import InvalidInput

MULTILINE_FIELDS: frozenset[str] = frozenset(
    {
        "notes",
        "details",
        "goals",
        "reason",
        "plan",
        "support_plan",
        "guidance_for_teachers",
        "summary",
        "comment",
    }
)
"""Field names whose values are prose: newline, carriage return and tab are allowed there.

A field is matched by its own name (the last key of its path), so ``pairings[0].goals``
is prose wherever it appears.
"""

LINE_BREAKS_AND_TAB = frozenset("\n\r\t")
BIDI_CONTROLS = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
)

CONTROL_MESSAGE = "must not contain control characters"
FORMAT_MESSAGE = "must not contain invisible format characters (such as zero-width joiners)"
BIDI_MESSAGE = "must not contain bidirectional override or isolate characters"
SURROGATE_MESSAGE = "must not contain unpaired surrogates"
KEY_MESSAGE = "an object key holds control, format or bidirectional characters"

# At most this many field errors in one answer: a body with thousands of bad strings gets
# a useful answer, not a huge one.
MAX_ERRORS = 20


def is_multiline(field: str) -> bool:
    """Whether a field (a name or a path such as ``logs[2].notes``) holds prose."""
    name = field.rsplit(".", 1)[-1].split("[", 1)[0]
    return name in MULTILINE_FIELDS


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """What is wrong with ``value`` under the text rule, or None when it may be stored."""
    if value.isprintable():
        # No Cc, Cf or Cs character (the common case, checked in C). Unassigned, private
        # use and space characters other than U+0020 also fail isprintable(); they are
        # allowed, and the slow path below looks at each character.
        return None
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc":
            if multiline and char in LINE_BREAKS_AND_TAB:
                continue
            return CONTROL_MESSAGE
        if category == "Cf":
            if char in BIDI_CONTROLS:
                return BIDI_MESSAGE
            if not multiline:
                return FORMAT_MESSAGE
        elif category == "Cs":
            return SURROGATE_MESSAGE
    return None


def check_text(field: str, value: str, *, multiline: bool | None = None) -> None:
    """Raise :class:`InvalidInput` naming ``field`` when ``value`` breaks the text rule.

    ``multiline`` defaults to what :data:`MULTILINE_FIELDS` says about the field's name.
    """
    message = text_problem(value, multiline=is_multiline(field) if multiline is None else multiline)
    if message is not None:
        raise InvalidInput.field(field, message)


def document_problems(document: Any) -> list[dict[str, str]]:
    """Every string in a decoded JSON document (object keys too) checked by the text rule.

    Returns ``[{"field", "message"}]`` (at most :data:`MAX_ERRORS`), fields named by path
    such as ``guardians[0].name``; an empty list when the whole document may be stored.
    """
    errors: list[dict[str, str]] = []
    for field, message in _walk(document, "", ""):
        errors.append({"field": field or "body", "message": message})
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def _walk(value: Any, path: str, name: str) -> Iterator[tuple[str, str]]:
    # Depth is bounded by the caller (JSON bodies are refused beyond 32 levels first).
    if isinstance(value, str):
        message = text_problem(value, multiline=name in MULTILINE_FIELDS)
        if message is not None:
            yield path, message
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            if text_problem(key) is not None:
                # Naming the field would echo the key, which is the offending value.
                yield path or "body", KEY_MESSAGE
                continue
            yield from _walk(item, f"{path}.{key}" if path else key, key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]", name)
