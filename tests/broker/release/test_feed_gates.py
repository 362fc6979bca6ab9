"""What a recipient may ask a feed for, through the real HTTPS server with client certificates and
certificate-bound tokens, on real MDMS readings (X.1332 R3.5): only a purpose it is registered
for, refused before any policy decision is made or recorded, at subscription and again at every
page (a registration narrowed later stops the feed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import func, select

from broker.policy.decision import TABLE as DECISIONS
from broker.release.models import Feed
from tests.broker.api.test_limits import bearer, error_of
from tests.broker.oauth import conftest as oauth
from tests.broker.release.conftest import CUSTOMER, DAY0, Broker, set_purposes

SUBJECT: dict[str, Any] = {"purpose": "personalised_service", "categories": ["consumption"],
                           "granularity": "hourly", "scope": "subject", "subject": CUSTOMER,
                           "period_from": DAY0.isoformat()}  # fmt: skip


def _decisions(b: Broker) -> int:
    with b.rt.db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(DECISIONS)).scalar_one())


def _feeds(b: Broker) -> int:
    with b.rt.db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(Feed)).scalar_one())


@contextmanager
def _as(wired: oauth.Broker, who: oauth.Party) -> Iterator[httpx.Client]:
    """A client with ``who``'s certificate sending its bound token on every request."""
    auth = bearer(wired, who)
    with wired.client(who) as client:
        client.headers.update(auth)
        yield client


def test_R3_5_a_feed_for_a_purpose_outside_the_registration_is_refused_before_any_decision(
    broker: Broker, wired: oauth.Broker
) -> None:
    acme = wired.onboard("acme")  # registered for personalised_service only
    broker.consent(purpose="demand_response")  # the customer's consent would cover it
    with _as(wired, acme) as client:
        refused = client.post("/v1/feeds", json=SUBJECT | {"purpose": "demand_response"})
        allowed = client.post("/v1/feeds", json=SUBJECT)
    detail = error_of(refused, 403, "PurposeNotRegistered")
    assert "'demand_response'" in detail and "personalised_service" in detail
    assert allowed.status_code == 201, allowed.text
    assert _feeds(broker) == 1 and _decisions(broker) == 0


def test_R3_5_a_feed_whose_purpose_leaves_the_registration_stops_at_the_next_page(
    broker: Broker, wired: oauth.Broker
) -> None:
    acme = wired.onboard("acme", purposes=("demand_response", "personalised_service"))
    broker.consent(purpose="demand_response")
    with _as(wired, acme) as client:
        feed_id = client.post("/v1/feeds", json=SUBJECT | {"purpose": "demand_response"}).json()[
            "feed_id"
        ]
        first = client.get(f"/v1/feeds/{feed_id}/data")
        assert first.status_code == 200, first.text
        decided = _decisions(broker)
        set_purposes(broker.rt, "acme", ("personalised_service",))  # the operator narrows it
        cursor = {"cursor": first.headers["X-Next-Cursor"]}
        refused = client.get(f"/v1/feeds/{feed_id}/data", params=cursor)
        feed = client.get(f"/v1/feeds/{feed_id}").json()
        again = client.get(f"/v1/feeds/{feed_id}/data", params=cursor)
    detail = error_of(refused, 403, "PurposeNotRegistered")
    assert "'demand_response'" in detail and "personalised_service" in detail
    assert _decisions(broker) == decided  # refused before the policy was asked
    assert feed["status"] == "stopped" and feed["stop_reason"] == detail
    assert "is stopped" in error_of(again, 409, "FeedStopped")
