"""Who is asking: the client address and scheme behind trusted proxies (SPEC §7).

The client address counts login attempts and is written to the audit trail, so it must
not be something a caller can choose. It is the socket's peer, except when that peer is a
proxy listed in ``CASEMGR_TRUSTED_PROXIES``: then ``X-Forwarded-For`` names the client.

``X-Forwarded-For`` is read from the right, the end each proxy appends to: hops that are
trusted proxies are skipped, and the first other address is the client. Anything left of
it was written by the client (or by proxies we do not know) and is never believed. An
entry that is not a plain IP address ends the walk, and the last trusted hop reached (at
first, the peer) stays the client. ``X-Forwarded-Proto`` from a trusted peer sets the
scheme, so that a request that reached the proxy over TLS counts as HTTPS (HSTS).

Headers from an untrusted peer change nothing. The server itself must not interpret them
either: ``casemgr serve`` runs uvicorn with ``proxy_headers=False``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from litestar.types import ASGIApp, Receive, Scope, Send

from casemgr.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Longer than any textual IP address (an IPv6 address with an embedded IPv4 one is 45
# characters, 47 in brackets): anything longer is refused before it is parsed.
MAX_ADDRESS_LENGTH = 47
# Hops looked at, from the right; a longer chain of our own proxies is not a real setup.
MAX_HOPS = 32
SCHEMES = {"http": ("http", "ws"), "https": ("https", "wss")}


def parse_address(text: str) -> IPAddress | None:
    """A plain IPv4 or IPv6 address (brackets allowed); None for anything else.

    Ports, zone ids (``fe80::1%eth0``), host names and ``unknown`` are refused: what is
    kept must be an address and fit the audit trail's column. IPv4-mapped IPv6 addresses
    become the IPv4 address they map.
    """
    text = text.strip()
    if not text or len(text) > MAX_ADDRESS_LENGTH:
        return None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
            return address.ipv4_mapped
    return address


def is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def forwarded_client(
    peer: IPAddress, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> IPAddress:
    """The client a trusted ``peer`` forwarded for; the peer itself when it is not trusted.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header value in order of arrival.
    """
    client = peer
    if not is_trusted(peer, trusted):
        return client
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops[-MAX_HOPS:]):
        address = parse_address(hop)
        if address is None:
            break
        client = address
        if not is_trusted(address, trusted):
            break
    return client


class ForwardedHeaders:
    """ASGI middleware: settle ``scope["client"]`` and ``scope["scheme"]`` before routing.

    It wraps the whole application (see ``casemgr.app``), so everything after it (routing,
    404s, login throttling, audit, the HSTS header) sees one answer to "who is asking".
    """

    def __init__(self, app: ASGIApp, trusted: Sequence[IPNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] in ("http", "websocket"):
            self.resolve(scope)
        await self.app(scope, receive, send)

    def resolve(self, scope: Scope) -> None:
        client = scope.get("client")
        peer = parse_address(client[0]) if client else None
        if peer is None or not is_trusted(peer, self.trusted):
            return
        forwarded_for: list[str] = []
        forwarded_proto: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                forwarded_proto = value.decode("latin-1")
        if forwarded_for:
            address = forwarded_client(peer, forwarded_for, self.trusted)
            if address != peer:
                # The client's port is not forwarded; 0 says "unknown".
                scope["client"] = (str(address), 0)
        if forwarded_proto is not None:
            # The nearest proxy appends last; it is the one we trust.
            proto = forwarded_proto.rsplit(",", 1)[-1].strip().lower()
            if proto in SCHEMES:
                http, ws = SCHEMES[proto]
                scope["scheme"] = http if scope["type"] == "http" else ws
