"""The external anchor: every line of the checkpoint file, also sent beyond the database's
reach (``CASEMGR_AUDIT_ANCHOR_URL``).

- ``syslog://host[:514]``: one RFC 5424 datagram per record over UDP (no acknowledgement:
  a record counts as delivered once sent);
- ``syslog+tcp://host[:514]``: the same messages over TCP, each ended by a newline
  (RFC 6587 non-transparent framing);
- ``http://`` or ``https://``: one POST per record, the JSON line as the body; any 2xx
  answer counts as delivered, redirects are not followed.

The message text is the record's JSON line itself, so the receiver's copy (a syslog file
keeps a date, host and tag before it, which the reader skips) can be given to ``casemgr
audit verify --checkpoint-file``. Delivery never loses a record: ``<checkpoint
file>.delivered`` says how many of the file's records this anchor has taken, and whatever
follows is sent again at the next checkpoint.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

SCHEMES = ("syslog", "syslog+tcp", "http", "https")
SYSLOG_PORT = 514
# authpriv.notice: security records, kept apart from ordinary logs by most syslog setups.
SYSLOG_PRIORITY = 10 * 8 + 5
APP_NAME = "casemgr-audit"
TIMEOUT_SECONDS = 5.0


class _State(msgspec.Struct):
    sink: str
    delivered: int


@dataclass(frozen=True)
class Delivery:
    sent: int
    waiting: int
    # The type of the error that stopped delivery (never its message, which may hold
    # addresses or credentials).
    error: str | None = None


def state_path(checkpoint_file: Path) -> Path:
    return checkpoint_file.with_name(checkpoint_file.name + ".delivered")


def sink_id(url: str) -> str:
    """Names the anchor in the state file without writing its URL (and any credentials)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def check_anchor_url(url: str) -> None:
    """Refuse an anchor URL this module cannot deliver to (ValueError)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"the audit anchor URL must start with one of {', '.join(SCHEMES)}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError("the audit anchor URL has a malformed port") from exc
    if not parts.hostname:
        raise ValueError("the audit anchor URL names no host")


def _record_lines(checkpoint_file: Path) -> list[str]:
    try:
        data = checkpoint_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    # Only whole lines: an append still under way (or cut short) is not a record yet.
    whole = data[: data.rfind("\n") + 1]
    return [line + "\n" for line in whole.splitlines() if line.strip()]


def _read_state(path: Path, sink: str) -> int:
    try:
        state = msgspec.json.decode(path.read_bytes(), type=_State)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return 0
    return state.delivered if state.sink == sink and state.delivered >= 0 else 0


def _write_state(path: Path, sink: str, delivered: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(msgspec.json.encode(_State(sink, delivered)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def syslog_message(line: str) -> bytes:
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host = socket.gethostname() or "-"
    header = f"<{SYSLOG_PRIORITY}>1 {at} {host} {APP_NAME} {os.getpid()} - - "
    return (header + line.rstrip("\n")).encode()


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return parts.hostname, parts.port or SYSLOG_PORT


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None  # a redirected POST would be re-sent as a GET, without the record


@contextmanager
def _sender(url: str, timeout: float) -> Iterator[Callable[[str], None]]:
    scheme = urlsplit(url).scheme
    if scheme == "syslog":
        host, port = _address(url)
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as udp:

            def datagram(line: str) -> None:
                udp.sendto(syslog_message(line), address)

            yield datagram
    elif scheme == "syslog+tcp":
        with socket.create_connection(_address(url), timeout=timeout) as tcp:
            yield lambda line: tcp.sendall(syslog_message(line) + b"\n")
    elif scheme in ("http", "https"):
        opener = urllib.request.build_opener(_NoRedirect)

        def post(line: str) -> None:
            request = urllib.request.Request(  # noqa: S310 - scheme checked just above
                url,
                data=line.encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with opener.open(request, timeout=timeout) as response:
                if not 200 <= response.status < 300:
                    raise urllib.error.HTTPError(
                        url, response.status, "not accepted", response.headers, None
                    )

        yield post
    else:
        raise ValueError(f"unsupported audit anchor scheme {scheme!r}")


def deliver_pending(
    checkpoint_file: Path, url: str, *, timeout: float = TIMEOUT_SECONDS
) -> Delivery:
    """Send the records the anchor has not taken yet, oldest first; stop at the first failure.

    Call it under ``anchor_lock`` (blocking: run it in a thread from async code).
    """
    sink = sink_id(url)
    state = state_path(checkpoint_file)
    lines = _record_lines(checkpoint_file)
    delivered = min(_read_state(state, sink), len(lines))
    pending = lines[delivered:]
    if not pending:
        return Delivery(0, 0)
    sent = 0
    error: str | None = None
    try:
        with _sender(url, timeout) as send:
            for line in pending:
                send(line)
                sent += 1
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        error = type(exc).__name__
    finally:
        if sent:
            _write_state(state, sink, delivered + sent)
    return Delivery(sent, len(pending) - sent, error)
