"""Domain errors. Services raise these; the web layer turns them into RFC 9457 problems.

Messages never carry sensitive values: they name fields, not what was typed into them.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class InvalidInput(DomainError):
    status = 422
    title = "Invalid input"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        super().__init__(detail or "; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.extra = {"errors": errors}

    @classmethod
    def field(cls, name: str, message: str) -> InvalidInput:
        return cls([{"field": name, "message": message}])


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class Unauthenticated(DomainError):
    status = 401
    title = "Authentication required"


class LoginFailed(DomainError):
    """One answer for every way a login can fail, so that none can be told apart."""

    status = 401
    title = "Login failed"

    def __init__(self) -> None:
        super().__init__("The username, password or one-time code is not correct.")


class TooManyAttempts(DomainError):
    status = 429
    title = "Too many attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed attempts. Try again later.")
        self.retry_after = retry_after
