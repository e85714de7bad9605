"""Real local endpoints for notification tests: an HTTP webhook receiver and an SMTP sink.

Both listen on 127.0.0.1 with a port picked by the OS and record what they receive. The tests
at the bottom check the endpoints themselves.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import socketserver
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass(frozen=True)
class Received:
    """One request the webhook receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class WebhookReceiver:
    """An HTTP server that answers POSTs; a path can be told to fail its first N requests.

    Attributes:
        requests: every request received, in order.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.arrived_held = threading.Event()
        self._failures: dict[str, int] = {}
        self._holds: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    held = next((p for p in receiver._holds if self.path.startswith(p)), None)
                    gate = receiver._holds.pop(held) if held is not None else None
                if gate is not None:
                    receiver.arrived_held.set()
                    gate.wait(30)
                with receiver._lock:
                    prefix = next((p for p in receiver._failures if self.path.startswith(p)), None)
                    status = 200
                    if prefix is not None and receiver._failures[prefix] > 0:
                        receiver._failures[prefix] -= 1
                        status = 503
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"try again")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_first(self, path_prefix: str, times: int) -> None:
        """Answers 503 to the first ``times`` requests whose path starts with the prefix."""
        with self._lock:
            self._failures[path_prefix] = times

    def hold(self, path_prefix: str) -> threading.Event:
        """Keeps the next request under the prefix waiting until the returned event is set
        (a slow endpoint); ``arrived_held`` is set when it arrives."""
        gate = threading.Event()
        with self._lock:
            self._holds[path_prefix] = gate
        return gate

    def wait_for(self, count: int, timeout: float = 30.0, path_prefix: str = "") -> list[Received]:
        """Waits until ``count`` requests (under the prefix) arrived; returns them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                matching = [r for r in self.requests if r.path.startswith(path_prefix)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"got {len(matching)} of {count} requests under {path_prefix!r}: "
                        f"{[r.path for r in self.requests]}"
                    )
                self._changed.wait(remaining)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class SmtpSink:
    """A minimal SMTP server that accepts every message and keeps it.

    Attributes:
        messages: the messages received, parsed.
    """

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._changed = threading.Condition()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self) -> None:
                self.reply("220 localhost joblog test sink")
                sender, recipients = "", []
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 localhost")
                    elif verb == "MAIL":
                        sender, recipients = line.split(":", 1)[1].strip(" <>"), []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        recipients.append(line.split(":", 1)[1].strip(" <>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = bytearray()
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b".\n", b""):
                                break
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        message = email.message_from_bytes(bytes(data), policy=email.policy.default)
                        with sink._changed:
                            sink.messages.append(message)  # type: ignore[arg-type]
                            sink.envelopes.append((sender, recipients))
                            sink._changed.notify_all()
                        self.reply("250 OK queued")
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def hold(self, path_prefix: str) -> threading.Event:
        """Keeps the next request under the prefix waiting until the returned event is set
        (a slow endpoint); ``arrived_held`` is set when it arrives."""
        gate = threading.Event()
        with self._lock:
            self._holds[path_prefix] = gate
        return gate

    def wait_for(self, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"got {len(self.messages)} of {count} emails")
                self._changed.wait(remaining)
            return list(self.messages)

    def start(self) -> SmtpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    server = SmtpSink().start()
    yield server
    server.stop()


def test_receiver_records_and_fails_on_request(receiver: WebhookReceiver) -> None:
    receiver.fail_first("/flaky", 1)
    request = urllib.request.Request(f"{receiver.url}/flaky", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=5)
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    assert [r.status for r in receiver.wait_for(2)] == [503, 200]


def test_smtp_sink_receives_a_message(smtp_sink: SmtpSink) -> None:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "hello"
    message.set_content("line one\n.starts with a dot\n")
    with smtplib.SMTP("127.0.0.1", smtp_sink.port, timeout=5) as client:
        client.send_message(message)
    (got,) = smtp_sink.wait_for(1)
    assert got["Subject"] == "hello"
    assert ".starts with a dot" in got.get_content()
    assert smtp_sink.envelopes == [("a@example.com", ["b@example.com"])]
