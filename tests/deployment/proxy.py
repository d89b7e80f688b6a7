"""A small TLS-terminating reverse proxy for the deployment test, standing in for the
Caddy of ``deploy/``: it decrypts, balances requests round-robin over the upstreams, and
sets ``X-Forwarded-For`` (the peer), ``X-Forwarded-Proto: https`` and ``X-Request-ID`` as
Caddy does, dropping whatever the client sent under those names. It connects to the
upstreams from its own source address, so that the service can tell it from the clients.

HTTP/1.1 with h11 (uvicorn's pure-Python parser), asyncio, one upstream connection per
request; it runs in a thread of its own so that the test can stay synchronous.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import uuid
from pathlib import Path

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FORWARDED = {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"}
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade"}
MAX_BODY = 16 * 1024 * 1024


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and 127.0.0.1, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "proxy.crt", folder / "proxy.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


async def _read_message(
    reader: asyncio.StreamReader, connection: h11.Connection
) -> tuple[h11.Request | h11.Response | None, bytes]:
    """The next request (or response) on ``connection`` with its whole body."""
    head: h11.Request | h11.Response | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            connection.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None, b""
        if isinstance(event, (h11.Request, h11.Response)):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ValueError("body too large")
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body)


class TlsProxy:
    def __init__(
        self,
        upstreams: list[tuple[str, int]],
        cert_file: Path,
        key_file: Path,
        *,
        source_address: str = "127.0.0.2",
    ) -> None:
        self.upstreams = upstreams
        self.source_address = source_address
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_file, key_file)
        self.served = [0] * len(upstreams)
        self.request_ids: list[str] = []
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> int:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=30)
        return self.port

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        client = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await _read_message(reader, client)
                if not isinstance(request, h11.Request):
                    return
                index = self._next % len(self.upstreams)
                self._next += 1
                self.served[index] += 1
                response, answer = await self._forward(index, peer, request, body)
                headers = [(n, v) for n, v in response.headers if n.lower() not in HOP_BY_HOP]
                headers += [
                    (b"content-length", str(len(answer)).encode()),
                    (b"x-upstream", str(index).encode()),
                ]
                writer.write(
                    client.send(
                        h11.Response(
                            status_code=response.status_code,
                            headers=headers,
                            reason=response.reason,
                        )
                    )
                )
                writer.write(client.send(h11.Data(data=answer)) if answer else b"")
                writer.write(client.send(h11.EndOfMessage()))
                await writer.drain()
                if client.our_state is h11.MUST_CLOSE:
                    return
                client.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, ssl.SSLError, ValueError):
            return
        finally:
            writer.close()

    async def _forward(
        self, index: int, peer: str, request: h11.Request, body: bytes
    ) -> tuple[h11.Response, bytes]:
        host, port = self.upstreams[index]
        request_id = uuid.uuid4().hex
        self.request_ids.append(request_id)
        headers = [
            (name, value)
            for name, value in request.headers
            if name.lower() not in FORWARDED | HOP_BY_HOP | {b"content-length"}
        ]
        headers += [
            (b"x-forwarded-for", peer.encode()),
            (b"x-forwarded-proto", b"https"),
            (b"x-request-id", request_id.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reader, writer = await asyncio.open_connection(
            host, port, local_addr=(self.source_address, 0)
        )
        upstream = h11.Connection(h11.CLIENT)
        try:
            writer.write(
                upstream.send(
                    h11.Request(method=request.method, target=request.target, headers=headers)
                )
            )
            if body:
                writer.write(upstream.send(h11.Data(data=body)))
            writer.write(upstream.send(h11.EndOfMessage()))
            await writer.drain()
            response, answer = await _read_message(reader, upstream)
        finally:
            writer.close()
        assert isinstance(response, h11.Response)
        return response, answer
