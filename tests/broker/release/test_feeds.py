"""Pull feeds on real MDMS readings (X.1332 R3.4, C2.2, R4.4): a page per day through the one
pipeline, withdrawal stops the feed on the next page, cursors cannot be forged, and a recipient
reaches only its own feeds, through the HTTPS server with real client certificates."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from broker.api.access import Caller
from broker.api.app import create_app
from broker.api.feeds import feeds_router
from broker.api.peer import PeerDep
from broker.api.server import build, running
from broker.api.tls import client_context
from broker.ca.authority import CertificateAuthority, Issued
from broker.errors import NotFound
from broker.kit.clock import SystemClock
from broker.release.errors import FeedStopped, InvalidFeed, ReleaseDenied
from broker.release.feeds import FeedService, FeedSpec
from tests.broker.release.conftest import CUSTOMER, DAY0, Broker

SUBJECT = FeedSpec("personalised_service", ("consumption",), "hourly", "subject",
                   subject=CUSTOMER, period_from=DAY0)  # fmt: skip


def _service(b: Broker) -> FeedService:
    return FeedService(b.rt.db, b.pipeline(), b.clock, b.rt.hasher, b.directory)


def test_R3_4_withdrawal_stops_the_feed_on_the_next_page(broker: Broker) -> None:
    consent_id = broker.consent()
    feeds = _service(broker)
    feed = feeds.subscribe("acme", SUBJECT)
    first = feeds.page("acme", feed["feed_id"])
    doc = json.loads(first.body.content)
    assert first.rows == 24 and len(doc["rows"]) == 24
    assert doc["release"]["release_id"] == first.release_id
    assert first.next_cursor is not None
    broker.withdraw(consent_id)
    with pytest.raises(ReleaseDenied):
        feeds.page("acme", feed["feed_id"], first.next_cursor)
    stopped = feeds.get("acme", feed["feed_id"])
    assert stopped["status"] == "stopped" and "consent" in stopped["stop_reason"]
    with pytest.raises(FeedStopped):
        feeds.page("acme", feed["feed_id"], first.next_cursor)


def test_R4_4_ems_feed_pages_hold_no_meter_id_or_small_group(broker: Broker) -> None:
    feeds = _service(broker)
    spec = FeedSpec("grid_operations", ("consumption",), "hourly", "aggregate", "csv",
                    groups=("F-001", "F-002"), period_from=DAY0)  # fmt: skip
    feed = feeds.subscribe("ems-grid", spec)
    page = feeds.page("ems-grid", feed["feed_id"])
    body = page.body.content.decode()
    for meter in broker.fleet.meters:
        assert meter.system_title.hex().upper() not in body
    assert "ps1:" not in body and "hs1:" not in body and "F-001" in body
    second = feeds.page("ems-grid", feed["feed_id"], page.next_cursor)
    assert second.rows > 0 and second.next_cursor is not None  # continuous: today not yet over
    empty = feeds.page("ems-grid", feed["feed_id"], second.next_cursor)
    assert empty.rows == 0 and empty.next_cursor == second.next_cursor


def test_C2_2_cursors_and_feeds_are_the_recipients_own(broker: Broker) -> None:
    broker.consent()
    feeds = _service(broker)
    feed = feeds.subscribe("acme", SUBJECT)
    page = feeds.page("acme", feed["feed_id"])
    with pytest.raises(NotFound):
        feeds.get("rival", feed["feed_id"])
    with pytest.raises(NotFound):
        feeds.page("rival", feed["feed_id"])
    assert page.next_cursor is not None
    forged = feeds.cursor("fd_other", 19_999)
    with pytest.raises(InvalidFeed):
        feeds.page("acme", feed["feed_id"], forged)
    with pytest.raises(InvalidFeed):
        feeds.page("acme", feed["feed_id"], page.next_cursor[:-2] + "AA")
    with pytest.raises(InvalidFeed):
        feeds.page("acme", feed["feed_id"], limit=1000)


def _issue(b: Broker, name: str) -> Issued:
    ca = CertificateAuthority(b.rt.settings, SystemClock())
    with b.rt.db.transaction() as session:
        return ca.issue(session, b.rt.audit, role="third-party", name=name, actor="test")


def _by_certificate(_method: str, _path: str) -> Callable[..., Caller]:
    """A stand-in for the table's guard: the recipient is the certificate's name."""

    def caller(peer: PeerDep) -> Caller:
        return Caller(peer.name, frozenset(), peer)

    return caller


@dataclasses.dataclass
class Server:
    port: int
    acme: httpx.Client
    rival: httpx.Client

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1/feeds"


BODY: dict[str, Any] = {"purpose": "personalised_service", "categories": ["consumption"],
                        "granularity": "hourly", "scope": "subject", "subject": CUSTOMER,
                        "period_from": DAY0.isoformat(), "format": "espi"}  # fmt: skip


@pytest.fixture
def server(broker: Broker) -> Iterator[Server]:
    """The feed routes on the real HTTPS server; the recipient is the certificate's name."""
    CertificateAuthority.create(broker.rt.settings, SystemClock())
    broker.consent()
    acme, rival = _issue(broker, "acme"), _issue(broker, "rival")
    served = build(broker.rt, "test")
    app: FastAPI = create_app(served.app.state.revocations)
    app.include_router(feeds_router(_service(broker), _by_certificate))
    ca_pem = broker.rt.settings.ca_dir / "ca.pem"

    def client(who: Issued) -> httpx.Client:
        assert who.key_path is not None
        ctx = client_context(ca_pem, who.cert_path, who.key_path)
        return httpx.Client(verify=ctx, timeout=10)

    with running(dataclasses.replace(served, app=app)) as port, client(acme) as a, \
            client(rival) as r:  # fmt: skip
        yield Server(port, a, r)


def test_C2_2_a_recipient_cannot_read_another_recipients_feed_over_mtls(server: Server) -> None:
    a, r, base = server.acme, server.rival, server.base
    created = a.post(base, json=BODY)
    assert created.status_code == 201, created.text
    feed_id = created.json()["feed_id"]
    assert created.json()["recipient"] == "acme"
    assert a.post(base, json={**BODY, "recipient": "rival"}).status_code == 422  # mass assignment
    assert r.get(f"{base}/{feed_id}").status_code == 404
    assert r.get(f"{base}/{feed_id}/data").status_code == 404
    assert r.delete(f"{base}/{feed_id}").status_code == 404
    assert a.get(f"{base}/{feed_id}/data", params={"limit": 10_000}).status_code == 422
    assert a.delete(f"{base}/{feed_id}").status_code == 204
    assert a.get(f"{base}/{feed_id}").json()["status"] == "stopped"


def test_C3_2_a_feed_page_over_mtls_is_green_button_xml(server: Server) -> None:
    feed_id = server.acme.post(server.base, json=BODY).json()["feed_id"]
    data = server.acme.get(f"{server.base}/{feed_id}/data")
    assert data.status_code == 200, data.text
    assert data.headers["X-Next-Cursor"]
    assert data.content.count(b"IntervalReading>") == 2 * 24
