"""The webhook allow-list (engine.notify.egress): which addresses a webhook may reach, and the
connection pinned to the address that was checked. Local HTTP servers only."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigurationError
from engine.notify import DeliveryLog, build_message, parse_subscriptions, read_deliveries
from engine.notify.delivery import AttemptResult, attempt
from engine.notify.egress import DEFAULT_ALLOW, EgressPolicy, TargetRefused
from engine.notify.service import Notifier, NotifierOptions
from engine.notify.subscriptions import SubscriptionSet
from tests.unit.test_notify import history
from tests.unit.test_notify_endpoints import WebhookReceiver, receiver

__all__ = ["receiver"]

DEFAULT = EgressPolicy.from_env({})


def refused(policy: EgressPolicy, address: str, host: str = "hooks.example.com") -> bool:
    return policy.refusal(host, ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # AWS, GCP, Azure metadata
        "169.254.0.1",
        "fe80::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
        "::ffff:169.254.169.254",  # the same, IPv4-mapped
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "fc00::1",
    ],
)
def test_link_local_metadata_and_private_addresses_are_refused_by_default(address: str) -> None:
    assert refused(DEFAULT, address)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.5.5.5", "::1", "8.8.8.8", "2001:4860::1"])
def test_public_and_loopback_addresses_are_allowed_by_default(address: str) -> None:
    assert DEFAULT.describe() == DEFAULT_ALLOW
    assert not refused(DEFAULT, address)


def test_keywords_networks_and_host_patterns() -> None:
    policy = EgressPolicy.parse("private, 169.254.169.254/32, *.internal.example.com")
    assert not refused(policy, "10.1.2.3")
    assert refused(policy, "8.8.8.8")  # no 'public'
    assert refused(policy, "127.0.0.1")  # no 'loopback'
    assert not refused(policy, "169.254.169.254")  # named by a network
    assert refused(policy, "169.254.1.1")
    assert not refused(policy, "127.0.0.1", host="hooks.internal.example.com")
    assert not refused(policy, "8.8.8.8", host="A.INTERNAL.example.com")
    # a host pattern never opens the link-local range or the metadata addresses
    assert refused(policy, "169.254.1.1", host="hooks.internal.example.com")
    assert refused(policy, "fd00:ec2::254", host="hooks.internal.example.com")
    assert policy.describe() == "private,169.254.169.254/32,*.internal.example.com"


@pytest.mark.parametrize("text", ["", " , ", "public,http://x", "10.0.0.0/33x"])
def test_a_bad_allow_list_says_what_to_write(text: str) -> None:
    with pytest.raises(ConfigurationError, match="JOBLOG_WEBHOOK_ALLOW"):
        EgressPolicy.parse(text)


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"rebind.example.com": ["93.184.216.34", "169.254.169.254"]}
    _fake_dns(monkeypatch, answers)
    with pytest.raises(TargetRefused, match=r"169\.254\.169\.254 is a link-local address"):
        DEFAULT.resolve("rebind.example.com", 80)
    answers["ok.example.com"] = ["93.184.216.34"]
    assert DEFAULT.resolve("ok.example.com", 80) == "93.184.216.34"


def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {})
    with pytest.raises(TargetRefused, match="does not resolve"):
        DEFAULT.resolve("nowhere.invalid", 80)


# --------------------------------------------------------------------------- attempts


def _attempt(url: str, policy: EgressPolicy | None = None) -> AttemptResult:
    view, events = history()
    (sub,) = parse_subscriptions([{"id": "hook", "url": "http://placeholder/"}]).subscriptions
    # the target set directly: subscriptions refuse other schemes already, this is the guard
    message = replace(build_message(sub, events[-1], view.jobs["frame-1"]), target=url)
    return attempt(message, timeout=5, egress=policy)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/hook",
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
    ],
)
def test_a_refused_target_is_a_permanent_failure_and_nothing_is_sent(url: str) -> None:
    result = _attempt(url)
    assert not result.ok and result.permanent and result.refused
    assert "refused" in result.error and result.status_code is None


def test_loopback_can_be_refused_too(receiver: WebhookReceiver) -> None:
    result = _attempt(f"{receiver.url}/x", EgressPolicy.parse("public"))
    assert result.refused and "127.0.0.1 is a loopback address" in result.error
    assert not receiver.requests
    assert _attempt(f"{receiver.url}/x").ok  # the default allows the loopback


def test_the_connection_goes_to_the_checked_address(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    lookups = _fake_dns(monkeypatch, {"hooks.example.com": ["127.0.0.1"]})
    result = _attempt(f"http://hooks.example.com:{port}/pinned")
    assert result.ok, result.error
    (got,) = receiver.wait_for(1)
    assert got.headers["host"] == f"hooks.example.com:{port}"
    assert lookups.count("hooks.example.com") == 1  # checked once, never looked up again


def test_a_redirect_to_a_refused_address_is_refused(redirector: str) -> None:
    result = _attempt(f"{redirector}/hook")
    assert result.refused and "169.254.169.254" in result.error


def test_the_notifier_records_a_refused_delivery(tmp_path: Path) -> None:
    from engine.config import Settings

    view, events = history()
    (sub,) = parse_subscriptions([{"id": "meta", "url": "http://169.254.169.254/x"}]).subscriptions
    log = DeliveryLog(tmp_path / "d.jsonl")
    notifier = Notifier(
        Settings(), SubscriptionSet((sub,)), deliveries=log, options=NotifierOptions()
    )
    message = build_message(sub, events[-1], view.jobs["frame-1"])
    result = attempt(message, egress=notifier.options.egress)
    delivery: Any = _FakeDelivery(message)
    notifier._generation[0] = 1
    notifier._settle_attempt(delivery, result)
    log.close()
    (line,) = read_deliveries(tmp_path / "d.jsonl")
    assert line["outcome"] == "refused" and "link-local" in line["error"]
    assert notifier.metrics["refused"] == 1


class _FakeDelivery:
    def __init__(self, message: Any) -> None:
        self.message = message
        self.partition = 0
        self.offset = 0
        self.generation = 1
        self.max_attempts = 5
        self.timeout_s = 5.0
        self.key: tuple[str, ...] = ("k",)
        self.attempts = 0
        self.holding_since: float | None = None
        self.detached = False


@pytest.fixture
def redirector() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Makes ``socket.getaddrinfo`` answer ``answers`` for names (literals pass through)."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            ipaddress.ip_address(str(host))
        except ValueError:
            lookups.append(str(host))
            if host not in answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (address, int(port or 0)),
                )
                for address in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups
