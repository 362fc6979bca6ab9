"""What a recipient may ask a feed for, through the real HTTPS server with client certificates and
certificate-bound tokens, on real MDMS readings (X.1332 R3.4, R3.5, C3.3):

- only a purpose it is registered for, refused before any policy decision is made or recorded,
  at subscription and again at every page (a registration narrowed later stops the feed);
- aggregates without consent only for a purpose whose aggregate release is lawful without it
  (the catalogue's ``aggregate_release``), never for a consent-based single-customer service;
- never a subject feed naming a customer whose consent is pseudonymous only: the page would tie
  the customer id to the pseudonym the recipient follows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import func, select

from broker.policy.decision import TABLE as DECISIONS
from broker.recipients.models import Kind
from broker.release.models import Feed
from tests.broker.api.test_limits import bearer, error_of
from tests.broker.oauth import conftest as oauth
from tests.broker.release.conftest import CUSTOMER, DAY0, Broker, set_purposes

SUBJECT: dict[str, Any] = {"purpose": "personalised_service", "categories": ["consumption"],
                           "granularity": "hourly", "scope": "subject", "subject": CUSTOMER,
                           "period_from": DAY0.isoformat()}  # fmt: skip
AGGREGATE: dict[str, Any] = {"purpose": "personalised_service", "categories": ["consumption"],
                             "granularity": "daily", "scope": "aggregate", "groups": ["F-001"],
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


def test_R3_4_R3_5_aggregates_without_consent_only_for_purposes_that_allow_them(
    broker: Broker, wired: oauth.Broker
) -> None:
    """An aggregate of a consent-based single-customer service is not released to a third
    party no household consented to; research aggregates are (the catalogue says so)."""
    acme = wired.onboard("acme")
    uni = wired.onboard("uni", Kind.researcher, ("energy_efficiency_research",))
    with _as(wired, acme) as client:
        feed_id = client.post("/v1/feeds", json=AGGREGATE).json()["feed_id"]
        refused = client.get(f"/v1/feeds/{feed_id}/data")
    research = AGGREGATE | {"purpose": "energy_efficiency_research"}
    with _as(wired, uni) as client:
        feed_id = client.post("/v1/feeds", json=research).json()["feed_id"]
        released = client.get(f"/v1/feeds/{feed_id}/data")
    assert "no_aggregate_basis" in error_of(refused, 403, "ReleaseDenied")
    assert released.status_code == 200, released.text
    assert released.json()["release"]["tier"] == "aggregated"


def test_R3_4_C3_3_a_pseudonymous_consent_never_lets_a_feed_name_the_customer(
    broker: Broker, wired: oauth.Broker
) -> None:
    """The customer consented to pseudonymous data only: a subject feed naming their customer
    id is refused, so the recipient never learns which pseudonym is theirs."""
    acme = wired.onboard("acme")
    broker.consent(identified=False)
    with _as(wired, acme) as client:
        made = client.post("/v1/feeds", json=SUBJECT | {"tier": "pseudonymised"})
        feed_id = made.json()["feed_id"]
        answers = [made, client.get(f"/v1/feeds/{feed_id}/data")]
        answers.append(client.get(f"/v1/feeds/{feed_id}"))
    detail = error_of(answers[1], 403, "ReleaseDenied")
    assert "pseudonymous_consent_only" in detail
    # the control: once the customer consents to being identified, acme may follow the meter
    # under the pseudonym it would have learnt; it appeared in none of the answers before
    broker.consent(identified=True)
    with _as(wired, acme) as client:
        feed_id = client.post("/v1/feeds", json=SUBJECT | {"tier": "pseudonymised"}).json()[
            "feed_id"
        ]
        shown = client.get(f"/v1/feeds/{feed_id}/data")
    assert shown.status_code == 200, shown.text
    pseudonyms = set(re.findall(r"ps1:\d+:[0-9a-f]+", shown.text))
    assert pseudonyms
    assert [p for p in pseudonyms for answer in answers if p in answer.text] == []
