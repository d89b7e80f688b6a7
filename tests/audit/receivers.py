"""Local stand-ins for an external anchor, on 127.0.0.1 ephemeral ports: a syslog receiver
over UDP, one over TCP, and an append-only HTTP receiver."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

TIMEOUT = 5.0


class Receiver(Protocol):
    url: str

    def received(self, count: int) -> list[str]:
        """The next ``count`` messages, as the receiver got them."""


class UdpReceiver:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        host, port = sock.getsockname()
        self.url = f"syslog://{host}:{port}"

    def received(self, count: int) -> list[str]:
        return [self.sock.recv(65535).decode() for _ in range(count)]


class TcpReceiver:
    """Each delivery is one connection carrying newline-ended messages."""

    def __init__(self, server: socket.socket) -> None:
        self.server = server
        host, port = server.getsockname()
        self.url = f"syslog+tcp://{host}:{port}"
        self._pending: list[str] = []

    def received(self, count: int) -> list[str]:
        while len(self._pending) < count:
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                data = b""
                while chunk := conn.recv(65535):
                    data += chunk
            assert data.endswith(b"\n")
            self._pending += data.decode().splitlines()
        taken, self._pending = self._pending[:count], self._pending[count:]
        return taken


class HttpReceiver(ThreadingHTTPServer):
    """Keeps every body it accepts; answers 503 (keeping nothing) while ``accepting`` is off."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        host, port = self.server_address[:2]
        self.url = f"http://{host!s}:{port}/anchor"
        self.bodies: list[str] = []
        self.accepting = True

    def received(self, count: int) -> list[str]:
        assert len(self.bodies) >= count, self.bodies
        taken, self.bodies = self.bodies[:count], self.bodies[count:]
        return taken


class _Handler(BaseHTTPRequestHandler):
    server: HttpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/json"
        if self.server.accepting and self.path == "/anchor":
            self.server.bodies.append(body.decode())
            self.send_response(204)
        else:
            self.send_response(503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def udp_receiver() -> Iterator[UdpReceiver]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(TIMEOUT)
        yield UdpReceiver(sock)


@contextmanager
def tcp_receiver() -> Iterator[TcpReceiver]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        yield TcpReceiver(server)


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@contextmanager
def receiver(kind: str) -> Iterator[Receiver]:
    opened = {"syslog": udp_receiver, "syslog+tcp": tcp_receiver, "http": http_receiver}[kind]
    with opened() as listening:
        yield listening
