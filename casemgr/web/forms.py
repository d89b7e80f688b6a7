"""Reading HTML forms under the same text rule as JSON bodies (``casemgr.validation``)."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile

from casemgr.errors import InvalidInput
from casemgr.validation import is_multiline, text_problem
from casemgr.web.sessions import CSRF_FIELD

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
"""What form routes declare in their ``opt`` (``casemgr.guards.CONTENT_TYPES``)."""

T = TypeVar("T")
MAX_FIELD_LENGTH = 10_000
MAX_NEXT_LENGTH = 512


class Form:
    """The fields of a submitted form, each checked by the text rule when read."""

    def __init__(self, values: dict[str, list[Any]]) -> None:
        self._values = values

    @classmethod
    async def read(cls, request: Request[Any, Any, Any]) -> Form:
        form = await request.form()
        values: dict[str, list[Any]] = {}
        for key, value in form.multi_items():
            if key == CSRF_FIELD:
                continue
            values.setdefault(key, []).append(value)
        return cls(values)

    def _checked(self, name: str, value: str) -> str:
        if len(value) > MAX_FIELD_LENGTH:
            raise InvalidInput.field(name, "is too long")
        problem = text_problem(value, multiline=is_multiline(name))
        if problem is not None:
            raise InvalidInput.field(name, problem)
        return value

    def text(self, name: str, default: str = "") -> str:
        raw = self._values.get(name)
        if not raw or not isinstance(raw[0], str):
            return default
        return self._checked(name, raw[0])

    def texts(self, name: str) -> list[str]:
        return [self._checked(name, v) for v in self._values.get(name, []) if isinstance(v, str)]

    def optional(self, name: str) -> str | None:
        value = self.text(name).strip()
        return value or None

    def date(self, name: str, *, required: bool = True) -> date | None:
        value = self.text(name).strip()
        if not value:
            if required:
                raise InvalidInput.field(name, "must not be blank")
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise InvalidInput.field(name, "must be a date (YYYY-MM-DD)") from None

    def id(self, name: str) -> uuid.UUID:
        value = self.text(name).strip()
        try:
            return uuid.UUID(value)
        except ValueError:
            raise InvalidInput.field(name, "choose one from the list") from None

    def ids(self, name: str) -> list[uuid.UUID]:
        found = []
        for value in self.texts(name):
            try:
                found.append(uuid.UUID(value.strip()))
            except ValueError:
                raise InvalidInput.field(name, "choose from the list") from None
        return found

    def next_path(self, default: str) -> str:
        """Where to go after the form (``next``): a path of this site, else ``default``."""
        try:
            return safe_next(self.text("next"), default)
        except InvalidInput:
            return default

    def file(self, name: str) -> UploadFile | None:
        raw = self._values.get(name)
        if raw and isinstance(raw[0], UploadFile):
            return raw[0]
        return None


def safe_next(value: str | None, default: str = "/home") -> str:
    """A local path to go to after a form, or ``default``: never another site.

    Only paths of this service qualify: no scheme or host (``https://x``, ``//x``), no
    backslashes that browsers read as slashes, no control characters, and nothing under
    the API.
    """
    if not value or len(value) > MAX_NEXT_LENGTH or not value.isascii():
        return default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    if parts.path == "/api" or parts.path.startswith(("/api/", "/static/", "/sign-")):
        return default
    return value


def build(struct: type[T], values: dict[str, Any]) -> T:
    """A request struct from form values, with the API's own types and limits.

    A value the struct refuses is a 422 naming the field (never echoing the value).
    """
    try:
        return msgspec.convert(values, struct, strict=False)
    except msgspec.ValidationError as exc:
        match = _AT_FIELD.search(str(exc))
        field = match.group(1) if match else "body"
        raise InvalidInput.field(field.split(".")[0].split("[")[0], "is not valid") from None


_AT_FIELD = re.compile(r"at `\$\.([A-Za-z0-9_.\[\]]+)`")
