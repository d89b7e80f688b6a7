"""Headers every response carries (SPEC §7), errors and unknown routes included."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
# Sent only on answers to HTTPS requests (directly or through a trusted proxy, see
# ``casemgr.net``): over plain HTTP a browser ignores it, and it would pin nothing.
HSTS = "max-age=31536000; includeSubDomains"
SECURE_SCHEMES = frozenset({"https", "wss"})
# Anything under the API may carry personal data: never let a cache keep it.
NO_STORE_PREFIXES = ("/api/",)


async def add_security_headers(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: unlike route middleware it also sees 404s and 405s."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in HEADERS.items():
        headers[name] = value
    if scope.get("scheme") in SECURE_SCHEMES:
        headers["Strict-Transport-Security"] = HSTS
    if scope["path"].startswith(NO_STORE_PREFIXES):
        headers["Cache-Control"] = "no-store"
