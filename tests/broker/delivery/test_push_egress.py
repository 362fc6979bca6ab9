"""The push worker connects only where the egress policy admits, checked at every connection
(R3.1, C3.2; SSRF): a name rebound to loopback after registration, a stored URL that spells
loopback as ``2130706433`` or ``[::ffff:127.0.0.1]``, a loopback port the operator no longer
allows: nothing reaches the listener, the delivery is a dead letter saying why. A name resolved
by the worker's own resolver is pinned to the checked address, and TLS still verifies the
server certificate against the name."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlmodel import select

from broker.delivery.models import Delivery
from broker.delivery.service import http_poster
from broker.delivery.signing import load_delivery_key, public_jwk
from broker.recipients.egress import Egress, IPAddress, Resolver
from broker.recipients.errors import InvalidRecipient
from broker.recipients.models import Recipient
from broker.recipients.service import Recipients
from broker.runtime.wiring import open_ca, server_identity
from demo.receiver import (
    WebhookReceiver,
    serve_webhook,
    webhook_identity,
    webhook_server_context,
)
from tests.broker.delivery.conftest import CLOSED_PORT, FAST, Hooked
from tests.broker.delivery.test_push import _audit_types, _deliveries, _subscribe

PUBLIC = ipaddress.ip_address("93.184.215.14")
"""A global unicast address (never dialled here: the worker's resolver says otherwise)."""
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def resolving(table: dict[str, IPAddress]) -> Resolver:
    """A resolver that knows only ``table`` (the injected DNS of these tests)."""

    def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} unknown")
        return [table[host]]

    return resolve


@contextmanager
def listener() -> Iterator[tuple[int, socket.socket]]:
    """A loopback TCP port that never accepts: a connection made to it waits in its queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        yield sock.getsockname()[1], sock
    finally:
        sock.close()


def connected(sock: socket.socket) -> bool:
    """Whether anything connected (the worker's round has returned, so it would be queued)."""
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _set_stored_webhook(h: Hooked, url: str) -> None:
    """The URL as a row written before registration checked it (or by hand in the database)."""
    with h.b.rt.db.transaction() as session:
        row = session.get(Recipient, "acme")
        assert row is not None
        row.webhook_url = url
        session.add(row)


def _dead_because(h: Hooked, *words: str) -> None:
    rows = _deliveries(h)
    assert rows and {r.status for r in rows} == {"dead"} and {r.attempts for r in rows} == {1}
    for row in rows:
        assert "refused by egress policy" in (row.last_error or ""), row.last_error
        assert all(word in (row.last_error or "") for word in words), row.last_error
    assert _audit_types(h).count("delivery.dead_lettered") == len(rows)


def test_R3_1_a_name_rebound_to_loopback_after_registration_is_not_dialled(
    hooked: Hooked,
) -> None:
    """DNS rebinding: the name resolved to a public address when it was registered and to
    127.0.0.1 when the worker connects; the worker checks what it dials, not what was checked."""
    with listener() as (port, sock):
        url = f"https://hooks.rebind.test:{port}/hook"
        at_connect = Egress(resolve=resolving({"hooks.rebind.test": LOOPBACK}))
        refused = pytest.raises(InvalidRecipient, match=r"127\.0\.0\.1 \(loopback\): refused")
        with hooked.b.rt.db.transaction() as session, refused:  # so resolved at registration
            Recipients(hooked.b.rt.audit, hooked.b.clock, egress=at_connect).set_webhook(
                session, "acme", url, "test"
            )
        at_registration = Egress(resolve=resolving({"hooks.rebind.test": PUBLIC}))
        with hooked.b.rt.db.transaction() as session:
            Recipients(hooked.b.rt.audit, hooked.b.clock, egress=at_registration).set_webhook(
                session, "acme", url, "test"
            )
        _subscribe(hooked)
        poster = http_poster(FAST, server_identity(hooked.b.rt, open_ca(hooked.b.rt), "t"),
                             at_connect)  # fmt: skip
        try:
            assert hooked.push.round(poster).deliveries == {"delivered": 0, "retrying": 0,
                                                            "dead": 2}  # fmt: skip
        finally:
            poster.close()
        assert not connected(sock)
    _dead_because(hooked, "'hooks.rebind.test' reaches 127.0.0.1 (loopback)")
    assert not hooked.receiver.held


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "0x7f.1", "017700000001", "127.1", "[::ffff:127.0.0.1]",
     "[::ffff:7f00:1]", "[::7f00:1]", "127.0.0.1.", "localhost.", "localhost", "[::1]"],
)  # fmt: skip
def test_R3_1_a_stored_webhook_spelling_loopback_is_not_dialled(hooked: Hooked, host: str) -> None:
    """The worker dialled ``https://2130706433:<port>/`` (127.0.0.1) when a stored URL spelt
    loopback in a form the registration check missed; with the production setting (no private
    webhooks) it connects nowhere and the deliveries are dead letters naming loopback."""
    with listener() as (port, sock):
        _set_stored_webhook(hooked, f"https://{host}:{port}/hook")
        _subscribe(hooked)
        poster = http_poster(FAST, server_identity(hooked.b.rt, open_ca(hooked.b.rt), "t"))
        try:
            hooked.push.round(poster)
        finally:
            poster.close()
        assert not connected(sock)
    _dead_because(hooked, "(loopback): refused", "BROKER_WEBHOOK_ALLOW_PRIVATE is off")


@pytest.mark.parametrize(
    ("allow", "ports", "reason"),
    [
        (False, [], "BROKER_WEBHOOK_ALLOW_PRIVATE is off"),
        (True, [CLOSED_PORT], "is not in BROKER_WEBHOOK_PRIVATE_PORTS"),
    ],
)
def test_R3_1_a_loopback_webhook_needs_the_setting_and_its_port_at_connect_time(
    hooked: Hooked, allow: bool, ports: list[int], reason: str
) -> None:
    """The webhook was registered under a setting that allowed its loopback port; the worker's
    setting (the operator turned it off, or narrowed the ports) is what decides the connection."""
    _subscribe(hooked)
    update = {"webhook_allow_private": allow, "webhook_private_ports": ports}
    egress = Egress.of(hooked.b.rt.settings.model_copy(update=update))
    poster = http_poster(FAST, server_identity(hooked.b.rt, open_ca(hooked.b.rt), "t"), egress)
    try:
        assert hooked.push.round(poster).deliveries["dead"] == 2
    finally:
        poster.close()
    _dead_because(hooked, "'127.0.0.1' reaches 127.0.0.1 (loopback)", reason)
    assert not hooked.receiver.held and not hooked.receiver.answered_503


def test_R3_1_an_allowed_name_is_pinned_to_its_checked_address_and_tls_checks_the_name(
    hooked: Hooked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the setting on and the port allowed, a name the worker resolves to 127.0.0.1 is
    delivered: the connection goes to the checked address (``.test`` names are not in DNS: had
    anything resolved the name again, it would have failed) and the server certificate is
    verified against the name (SNI); a certificate for another name is refused by TLS. A proxy
    in the environment is not used (it would make the connection the policy checked)."""
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(proxy, f"http://127.0.0.1:{CLOSED_PORT}")
    rt = hooked.b.rt
    jwks = {"keys": [public_jwk(load_delivery_key(rt.settings))]}
    receiver = WebhookReceiver.for_jwks("acme", jwks, hooked.key)
    hook_ca, cert, cert_key = webhook_identity(tmp_path / "named", host="hooks.acme.test")
    ctx = webhook_server_context(rt.settings.ca_dir / "ca.pem", cert, cert_key)
    with serve_webhook(receiver, ctx) as port:
        names = {"hooks.acme.test": LOOPBACK, "other.acme.test": LOOPBACK}
        egress = Egress(allow_private=True, private_ports=frozenset({port}),
                        resolve=resolving(names))  # fmt: skip
        settings = FAST.model_copy(update={"ca_file": hook_ca})
        poster = http_poster(settings, server_identity(rt, open_ca(rt), "t"), egress)
        try:
            with rt.db.transaction() as session:
                hooked.push.outbox.enqueue(session, recipient="acme", kind="release",
                                           url=f"https://other.acme.test:{port}/hook",
                                           body=b"{}", media_type="application/json")  # fmt: skip
            assert hooked.push.outbox.run_due(poster)["retrying"] == 1
            with rt.db.transaction() as session:
                (mismatch,) = session.exec(select(Delivery)).all()
            assert "certificate verify failed" in (mismatch.last_error or ""), mismatch.last_error
            with rt.db.transaction() as session:
                Recipients(rt.audit, rt.clock, egress=egress).set_webhook(
                    session, "acme", f"https://hooks.acme.test:{port}/hook", "test"
                )
            _subscribe(hooked)
            assert hooked.push.round(poster).deliveries == {"delivered": 2, "retrying": 0,
                                                            "dead": 0}  # fmt: skip
        finally:
            poster.close()
    assert len(receiver.held) == 2 and not receiver.rejected
