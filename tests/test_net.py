"""The client address and scheme behind proxies (issue 5, findings 2 and 12; SPEC §7).

Forwarded headers count only when the socket's peer is a trusted proxy; then the
right-most address in X-Forwarded-For that is not a trusted proxy is the client, and
anything that is not a plain IP address is never believed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from casemgr.accounts import throttle
from casemgr.app import create_app
from casemgr.net import ForwardedHeaders, forwarded_client, parse_address
from casemgr.settings import Settings, parse_networks
from tests.accounts.helpers import LOGIN, audit_events

TRUSTED = parse_networks("10.0.0.0/8, 2001:db8:ffff::/48")
PROXY = "10.0.0.1"
OUTSIDER = "198.51.100.7"
HSTS = "max-age=31536000; includeSubDomains"


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


# --- the rule, as a function ----------------------------------------------------------


def test_an_untrusted_peer_is_the_client_whatever_it_forwards():
    assert forwarded_client(ip(OUTSIDER), ["203.0.113.9"], TRUSTED) == ip(OUTSIDER)


def test_no_proxies_configured_means_every_peer_is_the_client():
    assert forwarded_client(ip(PROXY), ["203.0.113.9"], ()) == ip(PROXY)


def test_a_trusted_proxy_names_the_client():
    assert forwarded_client(ip(PROXY), ["203.0.113.9"], TRUSTED) == ip("203.0.113.9")


def test_trusted_hops_are_skipped_from_the_right_and_what_the_client_wrote_is_not_believed():
    # The client wrote "192.0.2.66" itself; proxy 10.0.0.2 appended the real address,
    # then 10.0.0.3 (another of ours) appended 10.0.0.2.
    chain = ["192.0.2.66, 203.0.113.9, 10.0.0.2"]
    assert forwarded_client(ip("10.0.0.3"), chain, TRUSTED) == ip("203.0.113.9")


def test_several_headers_count_as_one_list_in_order():
    chain = ["192.0.2.66", "203.0.113.9", "10.0.0.2"]
    assert forwarded_client(ip(PROXY), chain, TRUSTED) == ip("203.0.113.9")


@pytest.mark.parametrize(
    "value",
    [
        "<script>alert(1)</script>",
        "unknown",
        "",
        "   ",
        "203.0.113.9:4711",  # a port is not an address
        "fe80::1%eth0",  # nor is a zone id
        "example.org",
        "1" * 5000,  # overlong
        "203.0.113." + "9" * 60,
        "1.2.3.4\x00",
        "999.1.1.1",
    ],
)
def test_anything_but_a_plain_address_leaves_the_peer_as_the_client(value):
    assert forwarded_client(ip(PROXY), [value], TRUSTED) == ip(PROXY)


def test_garbage_after_a_trusted_hop_stops_at_that_hop():
    assert forwarded_client(ip(PROXY), ["junk, 10.0.0.2"], TRUSTED) == ip("10.0.0.2")


def test_garbage_left_of_the_client_is_never_read():
    assert forwarded_client(ip(PROXY), ["junk, 203.0.113.9"], TRUSTED) == ip("203.0.113.9")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2001:db8::7", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:DB8:0:0:0:0:0:7", "2001:db8::7"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
    ],
)
def test_ipv6_addresses(value, expected):
    assert forwarded_client(ip(PROXY), [value], TRUSTED) == ip(expected)
    assert forwarded_client(ip("2001:db8:ffff::1"), [value], TRUSTED) == ip(expected)


def test_an_ipv4_mapped_peer_is_trusted_as_its_ipv4_address():
    assert parse_address("::ffff:10.0.0.1") == ip(PROXY)


def test_a_whole_chain_of_trusted_proxies_ends_at_its_left_end():
    assert forwarded_client(ip(PROXY), ["10.9.9.9, 10.0.0.2"], TRUSTED) == ip("10.9.9.9")


# --- the middleware --------------------------------------------------------------------


def resolved(peer: str | None, headers: list[tuple[bytes, bytes]], kind: str = "http") -> Any:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {
        "type": kind,
        "scheme": "http" if kind == "http" else "ws",
        "client": (peer, 50000) if peer else None,
        "headers": headers,
    }
    import asyncio

    asyncio.run(ForwardedHeaders(app, TRUSTED)(scope, None, None))  # type: ignore[arg-type]
    return seen["client"], seen["scheme"]


def test_middleware_ignores_headers_from_an_untrusted_peer():
    headers = [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")]
    assert resolved(OUTSIDER, headers) == ((OUTSIDER, 50000), "http")


def test_middleware_takes_client_and_scheme_from_a_trusted_peer():
    headers = [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")]
    assert resolved(PROXY, headers) == (("203.0.113.9", 0), "https")
    assert resolved(PROXY, headers, "websocket") == (("203.0.113.9", 0), "wss")


@pytest.mark.parametrize("proto", [b"gopher", b"HTTPS ", b"https, http", b""])
def test_middleware_believes_only_http_or_https_from_the_nearest_proxy(proto):
    scheme = resolved(PROXY, [(b"x-forwarded-proto", proto)])[1]
    assert scheme == ("https" if proto.strip().lower() == b"https" else "http")


def test_middleware_leaves_a_peerless_connection_alone():
    assert resolved(None, [(b"x-forwarded-for", b"203.0.113.9")]) == (None, "http")


# --- end to end: throttling, audit, HSTS ---------------------------------------------


def client_behind(app: Any, peer: str, base_url: str = "http://testserver.local") -> TestClient:
    """A test client whose socket peer is ``peer`` (Litestar's own says "testclient")."""

    async def from_peer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            scope["client"] = (peer, 50000)
        await app(scope, receive, send)

    return TestClient(from_peer, base_url=base_url, raise_server_exceptions=False)  # type: ignore[arg-type]


@pytest.fixture
def proxied_app(settings: Settings) -> Any:
    return create_app(dataclasses.replace(settings, trusted_proxies=TRUSTED))


@pytest.fixture
def outsider(proxied_app: Any) -> Iterator[TestClient]:
    with client_behind(proxied_app, OUTSIDER) as client:
        yield client


@pytest.fixture
def via_proxy(proxied_app: Any) -> Iterator[TestClient]:
    with client_behind(proxied_app, PROXY) as client:
        yield client


def failed_login(client: TestClient, forwarded_for: str) -> int:
    response = client.post(
        LOGIN,
        json={"username": "ct_a1", "password": "not the password"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return response.status_code


def throttle_keys(db: Any) -> set[bytes]:
    return {bytes(row[0]) for row in db.execute("SELECT key FROM login_throttle")}


def test_spoofed_forwarded_for_changes_neither_throttling_nor_audit(db, world, outsider):
    for n in range(4):
        assert failed_login(outsider, f"203.0.113.{n}") in (401, 429)
    denied = audit_events(db, action="auth:login")
    assert len(denied) == 4
    assert {event.client_addr for event in denied} == {OUTSIDER}
    peer_keys = throttle.Keys.of(db.crypto, "ct_a1", OUTSIDER)
    assert throttle_keys(db) == {peer_keys.pair, peer_keys.account, peer_keys.client}


def test_a_trusted_proxy_names_the_client_for_throttling_and_audit(db, world, via_proxy):
    assert failed_login(via_proxy, "192.0.2.66, 203.0.113.9") == 401
    [event] = audit_events(db, action="auth:login")
    assert event.client_addr == "203.0.113.9"
    keys = throttle.Keys.of(db.crypto, "ct_a1", "203.0.113.9")
    assert throttle_keys(db) == {keys.pair, keys.account, keys.client}


def test_garbage_from_a_trusted_proxy_leaves_the_proxy_as_the_client(db, world, via_proxy):
    assert failed_login(via_proxy, "'); DROP TABLE users; --") == 401
    assert failed_login(via_proxy, "2001:db8::" + "1" * 300) == 401
    assert {e.client_addr for e in audit_events(db, action="auth:login")} == {PROXY}


def test_audit_names_the_forwarded_client_of_a_token_holder(db, world, via_proxy):
    response = via_proxy.get(
        f"/api/v1/classes/{world.class_a1}/students",
        headers={**world["ct_a1"].headers, "X-Forwarded-For": "2001:db8::42"},
    )
    assert response.status_code == 200
    [event] = audit_events(db, action="roster:read")
    assert event.client_addr == "2001:db8::42"


def test_hsts_only_when_the_request_came_over_https(proxied_app):
    with client_behind(proxied_app, PROXY) as proxy:
        assert proxy.get("/health").headers.get("strict-transport-security") is None
        over_tls = proxy.get("/health", headers={"X-Forwarded-Proto": "https"})
        assert over_tls.headers["strict-transport-security"] == HSTS
        missing = proxy.get("/no-such-page", headers={"X-Forwarded-Proto": "https"})
        assert missing.status_code == 404
        assert missing.headers["strict-transport-security"] == HSTS
    with client_behind(proxied_app, OUTSIDER) as outsider:
        spoofed = outsider.get("/health", headers={"X-Forwarded-Proto": "https"})
        assert "strict-transport-security" not in spoofed.headers
    with client_behind(proxied_app, OUTSIDER, base_url="https://testserver.local") as direct:
        assert direct.get("/health").headers["strict-transport-security"] == HSTS
