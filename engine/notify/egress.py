"""Which addresses the notifier's webhooks may reach: the allow-list, and connections pinned
to the addresses it checked.

A webhook URL may come from a submission (declared notifications), so without a guard any
client could make the notifier send requests into the network it runs in: the cloud metadata
service, an admin port on the loopback, the private network. Every webhook request goes
through :func:`open_guarded`, which

1. refuses a scheme other than ``http``/``https`` (no ``file:`` or ``ftp:``);
2. resolves the host name and checks **every** address it resolves to against the policy;
3. connects to the checked address itself (the TLS handshake still verifies the host
   name), so a second DNS answer cannot swap in another address (DNS rebinding);
4. checks each redirect's target the same way, and ignores proxy variables (the check must
   be about the address actually connected to).

The policy (``JOBLOG_WEBHOOK_ALLOW`` or ``joblog notifier --webhook-allow``) is a
comma-separated list of:

* ``public``: globally routable addresses;
* ``loopback``: 127.0.0.0/8 and ::1 (local receivers, the demo, tests);
* ``private``: the other addresses that are not globally routable (10/8, 172.16/12,
  192.168/16, 100.64/10, fc00::/7, ...);
* a network in CIDR notation (``10.1.2.0/24``, ``fd00::/8``, ``169.254.169.254/32``);
* a host name pattern (``hooks.example.com``, ``*.internal.example.com``): the host is
  allowed whatever (public, private or loopback) address it resolves to.

The default is ``public,loopback``. Link-local addresses (169.254.0.0/16, fe80::/10, where
the cloud metadata services answer), the known metadata addresses (``fd00:ec2::254``,
``100.100.100.200``), unspecified, multicast and reserved addresses are refused unless a
network in the list names them; a host pattern does not open them.
"""

from __future__ import annotations

import fnmatch
import http.client
import ipaddress
import os
import socket
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.errors import ConfigurationError
from engine.notify.errors import NotifyError

ALLOW_ENV = "JOBLOG_WEBHOOK_ALLOW"
DEFAULT_ALLOW = "public,loopback"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud metadata services outside the link-local ranges (AWS's IPv6 one, Alibaba Cloud's).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
_SCHEMES = frozenset({"http", "https"})


class TargetRefused(NotifyError):
    """A webhook target is outside the allow-list (``JOBLOG_WEBHOOK_ALLOW``)."""


@dataclass(frozen=True)
class EgressPolicy:
    """The addresses webhooks may reach (see the module doc).

    Attributes:
        public: globally routable addresses are allowed.
        loopback: loopback addresses are allowed.
        private: non-global (private, shared, unique-local) addresses are allowed.
        networks: networks allowed whatever their kind (metadata and link-local included).
        hosts: host name patterns (``fnmatch``, lower case) allowed on any address that is
            not link-local, metadata, unspecified, multicast or reserved.
    """

    public: bool = True
    loopback: bool = True
    private: bool = False
    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EgressPolicy:
        """The policy of a ``JOBLOG_WEBHOOK_ALLOW`` value.

        Raises:
            ConfigurationError: an entry is empty or not a keyword, network or host pattern.
        """
        entries = [entry.strip() for entry in text.split(",")]
        if not any(entries):
            raise ConfigurationError(
                f"{ALLOW_ENV} is empty: name what webhooks may reach (e.g. 'public' or "
                "'hooks.example.com'), or unset it for the default "
                f"{DEFAULT_ALLOW!r}"
            )
        keywords = {"public": False, "loopback": False, "private": False}
        networks: list[IPNetwork] = []
        hosts: list[str] = []
        for entry in entries:
            lowered = entry.lower()
            if not entry:
                continue
            if lowered in keywords:
                keywords[lowered] = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if not all(char.isalnum() or char in "-.*?_" for char in lowered):
                raise ConfigurationError(
                    f"{ALLOW_ENV} entry {entry!r} is not public, loopback, private, a network "
                    "(10.0.0.0/8) or a host name pattern (*.example.com)"
                )
            hosts.append(lowered)
        return cls(networks=tuple(networks), hosts=tuple(hosts), **keywords)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EgressPolicy:
        """The policy of ``JOBLOG_WEBHOOK_ALLOW`` (default ``public,loopback``)."""
        env = os.environ if env is None else env
        return cls.parse(env.get(ALLOW_ENV) or DEFAULT_ALLOW)

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why ``host`` may not be reached at ``address``, or ``None`` when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return None
        kind = _dangerous_kind(address)
        if kind is not None:
            return f"{address} is {kind}"
        if any(fnmatch.fnmatchcase(host.lower(), pattern) for pattern in self.hosts):
            return None
        if address.is_loopback:
            return None if self.loopback else f"{address} is a loopback address"
        if not address.is_global:
            return None if self.private else f"{address} is a private address"
        return None if self.public else f"{address} is a public address not in the list"

    def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: checked, with every other it resolves to.

        Raises:
            TargetRefused: the host resolves to an address outside the policy (or to none).
        """
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else _lookup(host, port)
        for address in addresses:
            reason = self.refusal(host, address)
            if reason is not None:
                raise TargetRefused(
                    f"webhook target {host} refused: {reason}; allow it in {ALLOW_ENV} "
                    f"(now {self.describe()!r}) if it is meant to be reached"
                )
        return str(addresses[0])

    def describe(self) -> str:
        """The policy as a ``JOBLOG_WEBHOOK_ALLOW`` value."""
        parts = [name for name in ("public", "loopback", "private") if getattr(self, name)]
        parts += [str(network) for network in self.networks]
        parts += list(self.hosts)
        return ",".join(parts)


def _dangerous_kind(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved and not address.is_loopback:  # 240/4 with broadcast; IPv6's ::/8
        return "a reserved address"
    return None


def _lookup(host: str, port: int) -> list[IPAddress]:
    # getaddrinfo takes no deadline: the resolver's own timeout and attempts bound it.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"webhook target {host} does not resolve: {exc}") from exc
    addresses: list[IPAddress] = []
    for _, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise TargetRefused(f"webhook target {host} resolves to no address")
    return addresses


# --------------------------------------------------------------------------- connections


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, address: str, **options: Any) -> None:
        super().__init__(host, **options)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, address: str, **options: Any) -> None:
        super().__init__(host, **options)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # server_hostname: the certificate is checked against the URL's host, not the address
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _pinned(policy: EgressPolicy, request: urllib.request.Request, default_port: int) -> str:
    scheme = request.type
    if scheme not in _SCHEMES:
        raise TargetRefused(f"webhook target scheme {scheme!r} refused: use http or https")
    parts = urlsplit(request.full_url)
    host = parts.hostname or ""
    if not host:
        raise TargetRefused(f"webhook target {request.full_url!r} has no host")
    return policy.resolve(host, parts.port or default_port)


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        address = _pinned(self.policy, req, http.client.HTTP_PORT)

        def connection(host: str, **options: Any) -> _PinnedHTTPConnection:
            return _PinnedHTTPConnection(host, address=address, **options)

        return self.do_open(connection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        address = _pinned(self.policy, req, http.client.HTTPS_PORT)

        def connection(host: str, **options: Any) -> _PinnedHTTPSConnection:
            return _PinnedHTTPSConnection(host, address=address, **options)

        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


def open_guarded(
    policy: EgressPolicy, request: urllib.request.Request, timeout: float
) -> http.client.HTTPResponse:
    """``urlopen`` under ``policy``: checked addresses, pinned connections, no proxies.

    Raises:
        TargetRefused: the target (or a redirect's) is outside the policy.
        urllib.error.URLError / OSError: the request failed.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({}),
        urllib.request.UnknownHandler(),
        _GuardedHTTPHandler(policy),
        _GuardedHTTPSHandler(policy),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    if request.type not in _SCHEMES:
        raise TargetRefused(f"webhook target scheme {request.type!r} refused: use http or https")
    response: http.client.HTTPResponse = opener.open(request, timeout=timeout)
    return response
