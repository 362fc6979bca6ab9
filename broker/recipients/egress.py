"""Where the push worker may connect: webhook hosts parsed as the resolver parses them, every
address checked, and the checked address pinned for the connection (R3.1, C3.2; SSRF).

A recipient chooses its webhook URL, so a URL is an instruction to the broker to open a
connection. Checking the URL's text is not enough: ``getaddrinfo`` (and ``inet_aton`` behind
it) reads ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` as 127.0.0.1,
``[::ffff:a9fe:a9fe]`` reaches 169.254.169.254 (the cloud metadata service), and a name that
resolved to a public address when it was registered may resolve to 127.0.0.1 when it is dialled
(DNS rebinding). So:

- ``parse_host`` reads a host as the resolver will: a trailing dot stripped; one to four dotted
  parts in decimal, octal (leading 0) or hex (0x) with ``inet_aton`` semantics; IPv6 literals
  with IPv4-mapped, -compatible, NAT64 and 6to4 forms reduced to the IPv4 address they reach; a
  host that ends in a number but is no address is refused rather than looked up; ``localhost``
  and ``*.localhost`` are loopback (RFC 6761) without asking DNS.
- ``classify`` puts an address in one of three classes. Always refused: unspecified, link-local,
  multicast, broadcast, reserved, documentation, benchmarking, protocol assignments, and
  anything Python's ``ipaddress`` does not call global. Private: loopback, RFC 1918, unique-local
  (fc00::/7) and shared (CGNAT, 100.64.0.0/10) addresses, allowed only when the operator sets
  ``BROKER_WEBHOOK_ALLOW_PRIVATE`` and only on a port of ``BROKER_WEBHOOK_PRIVATE_PORTS``
  (on-premises recipients, the demo and tests). Public: the rest.
- ``Egress.check_url`` runs at registration (``broker.recipients.service.check_webhook``): an
  early, clear refusal. A name that does not resolve yet is accepted; one that resolves to any
  refused address is not.
- ``pinned_client`` is the push worker's HTTP client. Its network backend resolves the host at
  every connection, refuses the connection when ANY resolved address is refused, and connects
  to a checked address itself, so nothing resolves the name again between check and connect.
  TLS is unchanged: SNI and certificate verification use the URL's host name. The client takes
  no proxy from the environment (a proxy would make the connection we checked) and follows no
  redirect.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import httpcore
import httpx

from broker.recipients.errors import EgressRefused

if TYPE_CHECKING:
    from broker.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[IPAddress]]
Verdict = Literal["public", "private", "refused"]


def _nets(
    *spec: tuple[str, str],
) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    return [(ipaddress.ip_network(net), label) for net, label in spec]


PRIVATE = _nets(
    ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
    ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared address space: CGNAT"), ("fc00::/7", "unique-local"),
)  # fmt: skip
"""Reachable only with ``BROKER_WEBHOOK_ALLOW_PRIVATE`` and on an allowed port."""
REFUSED = _nets(
    ("0.0.0.0/8", "unspecified"), ("169.254.0.0/16", "link-local: cloud metadata"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"), ("192.88.99.0/24", "6to4 relay anycast"),
    ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved or broadcast"),
    ("::/128", "unspecified"), ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments: Teredo"), ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"), ("64:ff9b:1::/48", "local-use translation"),
    ("::ffff:0:0:0/96", "IPv4-translated"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
)  # fmt: skip
"""Never reachable, whatever the settings."""
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")
_NUMERIC_END = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """``text`` read as ``inet_aton`` reads it (1 to 4 parts; 0x hex, leading-0 octal or
    decimal; the last part fills the remaining bytes), or None when it is not such a number."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.match(p) for p in parts):
        return None
    values = [int(p[2:], 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10)
              for p in parts]  # fmt: skip
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for i, value in enumerate(head):
        number |= value << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def reached(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped, -compatible or NAT64 IPv6 address reaches; else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        as_int = int(address)
        if as_int >> 32 == 0 and as_int > 1:  # ::a.b.c.d (not :: or ::1)
            return ipaddress.IPv4Address(as_int)
        if address in _NAT64:
            return ipaddress.IPv4Address(as_int & 0xFFFFFFFF)
    return address


def classify(address: IPAddress) -> tuple[Verdict, str]:
    """(public | private | refused, what the address is) for the address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "refused", "scoped (zone) address"
    target = reached(address)
    if isinstance(target, ipaddress.IPv6Address) and target.sixtofour is not None:
        verdict, label = classify(target.sixtofour)
        if verdict != "public":
            return "refused", f"6to4 form of {target.sixtofour}, {label}"
    for net, label in REFUSED:
        if target.version == net.version and target in net:
            return "refused", label
    for net, label in PRIVATE:
        if target.version == net.version and target in net:
            return "private", label
    if not target.is_global or target.is_multicast or target.is_reserved:
        return "refused", "not globally routable"
    return "public", "public"


@dataclass(frozen=True)
class Host:
    """A host as the resolver reads it: ``address`` for a literal (or localhost), else a name."""

    name: str
    address: IPAddress | None


def parse_host(host: str) -> Host:
    """Read ``host`` (as in a URL, without brackets) the way ``getaddrinfo`` will."""
    text = host.lower()
    if ":" in text:
        try:
            return Host(text, ipaddress.IPv6Address(text))
        except ValueError:
            raise EgressRefused(f"{host!r} is not an IPv6 address: refused") from None
    if text.endswith("."):
        text = text[:-1]
    labels = text.split(".")
    valid = text and len(text) <= 253 and all(_LABEL.match(label) for label in labels)
    if not text.isascii():
        raise EgressRefused(f"{host!r}: write the host name in its ASCII (xn--) form: refused")
    if not valid and not _NUMERIC_END.match(labels[-1]):
        raise EgressRefused(f"{host!r} is not a valid host name: refused")
    number = parse_ipv4(text)
    if number is not None:
        return Host(text, number)
    if _NUMERIC_END.match(labels[-1]):
        raise EgressRefused(f"{host!r} ends in a number but is not an IPv4 address: refused")
    if text == "localhost" or text.endswith(".localhost"):
        return Host(text, ipaddress.IPv4Address("127.0.0.1"))
    return Host(text, None)


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``getaddrinfo`` gives for ``host`` (TCP)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(info[4][0]) for info in found]


@dataclass(frozen=True)
class Egress:
    """The policy: refused and private classes, the port allow-list, and the resolver."""

    allow_private: bool = False
    private_ports: frozenset[int] = frozenset()
    resolve: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def of(cls, settings: Settings, resolve: Resolver = system_resolver) -> Egress:
        return cls(settings.webhook_allow_private, frozenset(settings.webhook_private_ports),
                   resolve)  # fmt: skip

    def check_address(self, host: str, address: IPAddress, port: int) -> None:
        verdict, label = classify(address)
        shown = f"{host!r} reaches {reached(address)} ({label})"
        if verdict == "refused":
            raise EgressRefused(f"{shown}: refused")
        if verdict == "private":
            if not self.allow_private:
                raise EgressRefused(f"{shown}: refused (BROKER_WEBHOOK_ALLOW_PRIVATE is off)")
            if port not in self.private_ports:
                raise EgressRefused(
                    f"{shown}: refused (port {port} is not in BROKER_WEBHOOK_PRIVATE_PORTS)"
                )

    def admit(self, host: str, port: int) -> list[IPAddress]:
        """At connect time: the addresses to dial for ``host``, every one checked; refused
        when any address the host resolves to is refused. OSError: it does not resolve."""
        parsed = parse_host(host)
        if parsed.address is not None:
            addresses: Sequence[IPAddress] = [parsed.address]
        else:
            addresses = self.resolve(parsed.name, port)
            if not addresses:
                raise OSError(f"{host!r} resolves to no address")
        for address in addresses:
            self.check_address(host, address, port)
        return [_dialled(address) for address in addresses]

    def check_url(self, url: str) -> str:
        """At registration: an https:// URL whose host the worker may reach; returns it."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise EgressRefused(f"webhook URL {url!r} is not a URL ({exc}): refused") from None
        try:
            port = parts.port or 443
        except ValueError:
            raise EgressRefused(f"webhook URL {url!r} has an invalid port: refused") from None
        if parts.scheme != "https" or not parts.hostname:
            raise EgressRefused(f"webhook URL {url!r} must be an https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise EgressRefused(f"webhook URL {url!r} carries credentials: refused")
        try:
            self.admit(parts.hostname, port)
        except EgressRefused as exc:
            raise EgressRefused(f"webhook URL {url!r}: {exc}") from None
        except OSError:
            pass  # not resolvable now: checked again at every connection
        try:
            dialled = httpx.URL(url).raw_host.decode("ascii")  # what httpcore will dial
        except (httpx.InvalidURL, UnicodeError) as exc:
            raise EgressRefused(f"webhook URL {url!r}: {exc}: refused") from None
        if _same_host(dialled) != _same_host(parts.hostname):
            raise EgressRefused(f"webhook URL {url!r}: its host is ambiguous: refused")
        return url


def _dialled(address: IPAddress) -> IPAddress:
    """The address to connect to: as resolved, an IPv4-mapped one as the IPv4 address it is
    (the same destination, without needing an IPv6 socket)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


NO_PRIVATE = Egress()
"""The production default: public addresses only."""


def _same_host(host: str) -> IPAddress | str:
    parsed = parse_host(host)
    return parsed.name if parsed.address is None else parsed.address


class _PinnedBackend(httpcore.NetworkBackend):
    """Resolves, checks every address, and connects to a checked one (no second lookup)."""

    def __init__(self, egress: Egress) -> None:
        self._egress = egress
        self._tcp = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._egress.admit(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host!r} does not resolve: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return self._tcp.connect_tcp(str(address), port, timeout, local_address,
                                             socket_options)  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002 (the interface's arguments)
        timeout: float | None = None,  # noqa: ARG002
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,  # noqa: ARG002
    ) -> httpcore.NetworkStream:
        raise EgressRefused("a webhook is never a Unix socket: refused")

    def sleep(self, seconds: float) -> None:
        self._tcp.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose network backend is ``_PinnedBackend``
    (httpx offers no parameter for one: the pool it built is replaced; ``handle_request`` is
    httpx's own)."""

    def __init__(self, ctx: ssl.SSLContext, egress: Egress) -> None:
        super().__init__(verify=ctx, trust_env=False)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5)
        self._pool = httpcore.ConnectionPool(  # httpx's default limits, our network backend
            ssl_context=ctx,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(egress),
        )


def pinned_client(ctx: ssl.SSLContext, egress: Egress, timeout_s: float) -> httpx.Client:
    """An httpx client that connects only where ``egress`` admits, TLS verified with ``ctx``."""
    return httpx.Client(transport=PinnedTransport(ctx, egress), timeout=timeout_s,
                        trust_env=False, follow_redirects=False)  # fmt: skip
