"""The egress policy's host parser and address classes against the C library's own readings
(R3.1; SSRF): ``parse_ipv4`` agrees with ``socket.inet_aton`` and ``parse_host`` with
``getaddrinfo`` on numeric hosts, so no spelling of an address reaches what the check did not
see; every resolved address is checked, and a URL's host is the one httpx dials."""

from __future__ import annotations

import ipaddress
import socket

import httpcore
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.recipients.egress import (
    NO_PRIVATE,
    Egress,
    IPAddress,
    _PinnedBackend,
    classify,
    parse_host,
    parse_ipv4,
)
from broker.recipients.errors import EgressRefused

NUMERIC = [
    "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0X7F.1", "0x7f.0.0.1",
    "017700000001", "0177.0.0.1", "0251.0376.0251.0376", "169.254.43518", "0xA9FEA9FE",
    "2852039166", "0", "0x0", "0.0x0.00.0", "255.255.255.255", "0xff.0xffffff", "1.2.65535",
    "4294967295", "00000000000000000000000127.1", "0x000000000000000000000000007f.1",
]  # fmt: skip
"""Hosts ``inet_aton`` reads as an IPv4 address."""
NOT_NUMERIC = [
    "4294967296", "256.1.1.1", "1.256.1.1", "1.2.3.256", "1.2.16777216", "08", "0.09.1.1",
    "1.2.3.4.5", "1..2", ".1", "1.", "", "0x", "0xg", "1.2.3.-4", "+1", "0x100.1",
    "hooks.example", "0x7f.1.example",
]  # fmt: skip
"""Hosts ``inet_aton`` refuses."""


def _aton(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


@pytest.mark.parametrize("text", NUMERIC + NOT_NUMERIC)
def test_R3_1_parse_ipv4_reads_what_inet_aton_reads(text: str) -> None:
    assert parse_ipv4(text) == _aton(text)
    assert (parse_ipv4(text) is None) == (text in NOT_NUMERIC)


_part = st.one_of(
    st.integers(0, 2**32).map(str),
    st.integers(0, 2**32).map(lambda n: f"0{n:o}"),
    st.integers(0, 2**32).map(lambda n: f"0x{n:x}"),
    st.integers(0, 2**32).map(lambda n: f"0X{n:X}"),
    st.sampled_from(["", "0x", "08", "09", "00", "0x0", "-1", "1e3"]),
)


@given(st.lists(_part, min_size=1, max_size=5).map(".".join))
def test_R3_1_parse_ipv4_agrees_with_inet_aton_on_generated_numbers(text: str) -> None:
    assert parse_ipv4(text) == _aton(text)


def _numeric_getaddrinfo(host: str) -> set[IPAddress]:
    found = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    return {ipaddress.ip_address(info[4][0]) for info in found}


@pytest.mark.parametrize(
    "host",
    [*NUMERIC, "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "::1", "fd00::5", "::7f00:1"],
)
def test_R3_1_parse_host_reads_numeric_hosts_as_getaddrinfo_does(host: str) -> None:
    parsed = parse_host(host)
    assert parsed.address is not None and {parsed.address} == _numeric_getaddrinfo(host)


@pytest.mark.parametrize(
    ("host", "reaches"),
    [
        ("127.0.0.1.", "127.0.0.1"),
        ("localhost.", "127.0.0.1"),
        ("LOCALHOST", "127.0.0.1"),
        ("api.localhost", "127.0.0.1"),
        ("0xA9FEA9FE.", "169.254.169.254"),
    ],
)
def test_R3_1_a_trailing_dot_and_localhost_names_are_read_as_addresses(
    host: str, reaches: str
) -> None:
    assert parse_host(host).address == ipaddress.ip_address(reaches)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1.5",
        "1.2.3.4.5",
        "08.1",
        "0x7f.0.0.0.1",
        "a..b",
        "-a.example",
        "a b",
        "é.example",
        "1.2.3.4 ",
    ],
)
def test_R3_1_hosts_that_are_neither_address_nor_name_are_refused(host: str) -> None:
    """A host ending in a number that is no address would be looked up in DNS; refused. (Unlike
    ``inet_aton``, which ignores what follows a space, a host with a space is refused.)"""
    with pytest.raises(EgressRefused, match="refused"):
        parse_host(host)


@pytest.mark.parametrize(
    ("address", "verdict", "label"),
    [
        ("8.8.8.8", "public", "public"),
        ("2606:4700:4700::1111", "public", "public"),
        ("127.0.0.1", "private", "loopback"),
        ("::1", "private", "loopback"),
        ("::ffff:127.0.0.1", "private", "loopback"),
        ("::7f00:1", "private", "loopback"),
        ("10.1.2.3", "private", "private"),
        ("172.31.255.255", "private", "private"),
        ("192.168.0.1", "private", "private"),
        ("100.64.0.1", "private", "shared address space: CGNAT"),
        ("fd12::1", "private", "unique-local"),
        ("169.254.169.254", "refused", "link-local: cloud metadata"),
        ("::ffff:169.254.169.254", "refused", "link-local: cloud metadata"),
        ("64:ff9b::a9fe:a9fe", "refused", "link-local: cloud metadata"),
        (
            "2002:a9fe:a9fe::1",
            "refused",
            "6to4 form of 169.254.169.254, link-local: cloud metadata",
        ),
        ("2002:0a00:0001::1", "refused", "6to4 form of 10.0.0.1, private"),
        ("fe80::1", "refused", "link-local"),
        ("0.0.0.0", "refused", "unspecified"),
        ("::", "refused", "unspecified"),
        ("224.0.0.1", "refused", "multicast"),
        ("ff02::1", "refused", "multicast"),
        ("255.255.255.255", "refused", "reserved or broadcast"),
        ("240.0.0.1", "refused", "reserved or broadcast"),
        ("192.0.2.1", "refused", "documentation"),
        ("2001:db8::1", "refused", "documentation"),
        ("2001::1", "refused", "IETF protocol assignments: Teredo"),
        ("198.18.0.1", "refused", "benchmarking"),
        ("fec0::1", "refused", "site-local"),
    ],
)
def test_R3_1_addresses_are_classed_by_what_they_reach(
    address: str, verdict: str, label: str
) -> None:
    assert classify(ipaddress.ip_address(address)) == (verdict, label)


def test_R3_1_a_scoped_address_is_refused() -> None:
    assert classify(ipaddress.IPv6Address("fd00::1%eth0"))[0] == "refused"


def test_R3_1_every_resolved_address_is_checked_and_the_reached_ones_are_dialled() -> None:
    mixed = Egress(resolve=lambda host, port: [ipaddress.ip_address("8.8.8.8"),
                                               ipaddress.ip_address("127.0.0.1")])  # fmt: skip
    with pytest.raises(EgressRefused, match=r"127\.0\.0\.1 \(loopback\)"):
        mixed.admit("hooks.example", 443)
    mapped = Egress(resolve=lambda host, port: [ipaddress.ip_address("::ffff:8.8.4.4")])
    assert mapped.admit("hooks.example", 443) == [ipaddress.ip_address("8.8.4.4")]
    nat64 = ipaddress.ip_address("64:ff9b::808:808")  # checked as 8.8.8.8, dialled as given
    assert Egress(resolve=lambda host, port: [nat64]).admit("hooks.example", 443) == [nat64]
    private = Egress(True, frozenset({9443}), resolve=lambda host, port: [])
    assert private.admit("[::1]".strip("[]"), 9443) == [ipaddress.ip_address("::1")]
    with pytest.raises(OSError, match="no address"):
        private.admit("hooks.example", 9443)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example/h", "https:// URL with a host"),
        ("https:///h", "https:// URL with a host"),
        ("https://user:pw@hooks.example/h", "credentials"),
        ("https://hooks.example:99999/h", "invalid port"),
        ("https://hooks.example:0x50/h", "invalid port"),
        ("https://[fe80::1%25eth0]/h", "scoped"),
        ("https://[::1/h", "not a URL"),
        ("https://bücher.example/h", "ASCII"),
    ],
)
def test_R3_1_urls_the_worker_cannot_use_safely_are_refused(url: str, why: str) -> None:
    with pytest.raises(EgressRefused, match=why):
        NO_PRIVATE.check_url(url)


_URL_BITS = st.sampled_from(
    [*":/[]@%.0123456789abcdefx-_~?#\\ \t", "é", "::", "ffff", "0x", "%25", "localhost",
     "xn--", "\u3002", "\uff0e", "ß", "kva"]
)  # fmt: skip


@given(st.lists(_URL_BITS, max_size=30).map(lambda bits: "https://" + "".join(bits)))
def test_R3_1_any_webhook_url_is_accepted_or_refused_clearly(url: str) -> None:
    """Never a crash (a 500 at the API): a URL passes, or EgressRefused says why."""
    unknown = Egress(resolve=lambda host, port: [])
    try:
        accepted = unknown.check_url(url)
    except EgressRefused as exc:
        message = exc.message
    else:
        message = "accepted" if accepted == url else "changed"
    assert message == "accepted" or "refused" in message or "https:// URL" in message, message


def test_R3_1_a_name_that_does_not_resolve_yet_is_accepted_and_checked_when_dialled() -> None:
    def unknown(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "unknown")

    egress = Egress(resolve=unknown)
    assert egress.check_url("https://hooks.example/h") == "https://hooks.example/h"
    with pytest.raises(httpcore.ConnectError, match="does not resolve"):
        _PinnedBackend(egress).connect_tcp("hooks.example", 443)


def test_R3_1_the_worker_never_opens_a_unix_socket() -> None:
    with pytest.raises(EgressRefused):
        _PinnedBackend(NO_PRIVATE).connect_unix_socket("/run/docker.sock")
