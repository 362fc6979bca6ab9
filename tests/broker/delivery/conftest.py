"""A broker with real readings (``tests.broker.release.conftest``) and a recipient's webhook
served over TLS on loopback that requires the broker's client certificate: the reference
receiver (``demo.receiver``), with its own private CA for its server certificate.
Loopback webhooks are allowed the way an operator allows them: ``BROKER_WEBHOOK_ALLOW_PRIVATE``
with the receiver's port in ``BROKER_WEBHOOK_PRIVATE_PORTS``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from broker.ca.authority import CertificateAuthority
from broker.delivery.outbox import HttpPoster
from broker.delivery.service import PushService, http_poster
from broker.delivery.settings import PushSettings
from broker.delivery.signing import load_delivery_key, public_jwk
from broker.kit.clock import SystemClock
from broker.recipients.egress import Egress
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.release.feeds import FeedService
from broker.runtime.wiring import open_ca, open_push, server_identity
from demo.receiver import (
    WebhookReceiver,
    serve_webhook,
    webhook_identity,
    webhook_server_context,
)
from tests.broker.release.conftest import Broker, broker  # noqa: F401 (the fixture)

FAST = PushSettings(backoff_base_s=1.0, backoff_cap_s=60.0, timeout_s=5.0, max_attempts=4)
CLOSED_PORT = 9
"""A loopback port nobody listens on (discard), allowed too: a webhook that moved away."""


@dataclass
class Hooked:
    b: Broker
    receiver: WebhookReceiver
    url: str
    key: ECKey
    push: PushService
    poster: HttpPoster
    feeds: FeedService
    egress: Egress
    """Loopback webhooks on the receiver's port (and ``CLOSED_PORT``), the explicit setting."""

    def round(self) -> dict[str, int]:
        return self.push.round(self.poster).deliveries


@pytest.fixture
def hooked(broker: Broker, tmp_path: Path) -> Iterator[Hooked]:  # noqa: F811
    rt = broker.rt
    ca = CertificateAuthority.create(rt.settings, SystemClock())
    identity = server_identity(rt, open_ca(rt), "test")
    jwks = {"keys": [public_jwk(load_delivery_key(rt.settings))]}
    key = ECKey.generate_key("P-256", parameters={"kid": "acme-1"})
    receiver = WebhookReceiver.for_jwks("acme", jwks, key)
    hook_ca, cert, cert_key = webhook_identity(tmp_path / "hook")
    settings = FAST.model_copy(update={"ca_file": hook_ca})
    with serve_webhook(receiver, webhook_server_context(ca.cert_path, cert, cert_key)) as port:
        url = f"https://127.0.0.1:{port}/hook"
        private = {"webhook_allow_private": True, "webhook_private_ports": [port, CLOSED_PORT]}
        egress = Egress.of(rt.settings.model_copy(update=private))
        service = Recipients(rt.audit, rt.clock, egress=egress)
        with rt.db.transaction() as session:
            purposes = ("personalised_service",)
            registration = Registration("acme", "Acme", Kind.third_party, purposes, url)
            service.register(session, registration, "test")
            service.add_key(session, "acme", key.as_dict(private=False), "test")
        feeds = FeedService(rt.db, broker.pipeline(), broker.clock, rt.hasher)
        poster = http_poster(settings, identity, egress)
        try:
            yield Hooked(
                broker, receiver, url, key, open_push(rt, feeds, settings), poster, feeds, egress
            )
        finally:
            poster.close()
