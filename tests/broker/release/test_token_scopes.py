"""Each feed route asks for its own scope, and a narrowed token reaches only what it names,
through the real HTTPS server with client certificates and certificate-bound tokens, on real
MDMS readings (X.1332 R3.3, R4.3, C3.2):

- reading a feed takes ``feeds:read``; creating or cancelling one takes ``feeds:write``;
- a token narrowed with ``purpose:<name>`` neither subscribes nor pulls for another purpose,
  refused before any policy decision is made;
- a token from the authorization-code flow names the customer's consent (``consent:<id>``)
  and subscribes or pulls nothing outside it;
- a token issued before its recipient was suspended stays refused after reinstatement.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import func, select

from broker.oauth.grant import ConsentAsk, allow_redirect, issue_code
from broker.policy.decision import TABLE as DECISIONS
from broker.recipients.service import Recipients
from broker.release.models import Feed
from tests.broker.api.test_limits import error_of
from tests.broker.oauth import conftest as oauth
from tests.broker.release.conftest import CUSTOMER, DAY0, OTHER_CUSTOMER, Broker

SUBJECT: dict[str, Any] = {"purpose": "personalised_service", "categories": ["consumption"],
                           "granularity": "hourly", "scope": "subject", "subject": CUSTOMER,
                           "period_from": DAY0.isoformat()}  # fmt: skip
REDIRECT = "https://acme.example/cb"
BOTH = ("demand_response", "personalised_service")


def _count(b: Broker, table: Any) -> int:
    with b.rt.db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def _token(wired: oauth.Broker, who: oauth.Party, scope: str) -> str:
    response = wired.token(who, scope)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@contextmanager
def _with(wired: oauth.Broker, who: oauth.Party, token: str) -> Iterator[httpx.Client]:
    with wired.client(who) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _scope_error(response: httpx.Response, scope: str) -> str:
    detail = error_of(response, 403, "InsufficientScope")
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert scope in detail, detail
    return detail


def test_R3_3_a_read_only_token_neither_creates_nor_cancels_a_feed(
    broker: Broker, wired: oauth.Broker
) -> None:
    acme = wired.onboard("acme")
    broker.consent()
    reader = _token(wired, acme, "feeds:read")
    writer = _token(wired, acme, "feeds:write")
    with _with(wired, acme, reader) as read_only:
        refused = read_only.post("/v1/feeds", json=SUBJECT)
        assert _count(broker, Feed) == 0  # nothing stored
        with _with(wired, acme, writer) as write_only:
            made = write_only.post("/v1/feeds", json=SUBJECT)
            assert made.status_code == 201, made.text
            feed_id = made.json()["feed_id"]
            not_readable = write_only.get(f"/v1/feeds/{feed_id}/data")
            read = read_only.get(f"/v1/feeds/{feed_id}/data")
            not_cancelled = read_only.delete(f"/v1/feeds/{feed_id}")
            still = read_only.get(f"/v1/feeds/{feed_id}").json()["status"]
            cancelled = write_only.delete(f"/v1/feeds/{feed_id}")
    _scope_error(refused, "feeds:write")
    _scope_error(not_cancelled, "feeds:write")
    _scope_error(not_readable, "feeds:read")
    assert read.status_code == 200, read.text
    assert still == "active" and cancelled.status_code == 204


def test_R3_3_a_purpose_narrowed_token_neither_subscribes_nor_pulls_for_another_purpose(
    broker: Broker, wired: oauth.Broker
) -> None:
    acme = wired.onboard("acme", purposes=BOTH)
    broker.consent(purpose="demand_response")
    broker.consent()
    wide = _token(wired, acme, "feeds:read feeds:write")
    narrow = _token(wired, acme, "feeds:read feeds:write purpose:personalised_service")
    other = SUBJECT | {"purpose": "demand_response"}
    with _with(wired, acme, wide) as client:
        theirs = client.post("/v1/feeds", json=other).json()["feed_id"]
    with _with(wired, acme, narrow) as client:
        subscribed = client.post("/v1/feeds", json=other)
        pulled = client.get(f"/v1/feeds/{theirs}/data")
        pushed = client.post("/v1/feeds", json=other | {"delivery": "push"})
        mine = client.post("/v1/feeds", json=SUBJECT)
        assert mine.status_code == 201, mine.text
        page = client.get(f"/v1/feeds/{mine.json()['feed_id']}/data")
    assert "purpose:demand_response" in _scope_error(subscribed, "purpose:demand_response")
    _scope_error(pulled, "purpose:demand_response")
    _scope_error(pushed, "purpose:demand_response")
    assert page.status_code == 200, page.text
    assert _count(broker, DECISIONS) == 1  # the one allowed page; the refusals decided nothing
    assert _count(broker, Feed) == 2


def _code_token(broker: Broker, wired: oauth.Broker, who: oauth.Party, consent_id: str) -> str:
    """A token from the authorization-code flow for ``consent_id`` (as the portal issues it)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    ask = ConsentAsk(who.name, REDIRECT, "s", challenge.rstrip(b"=").decode(),
                     "personalised_service", ("consumption",), "15min", 30)  # fmt: skip
    with broker.rt.db.transaction() as session:
        allow_redirect(session, who.name, REDIRECT)
        code = issue_code(session, broker.rt.clock, ask, CUSTOMER, consent_id)
    form = {"grant_type": "authorization_code", "client_id": who.name, "code": code,
            "redirect_uri": REDIRECT, "code_verifier": verifier}  # fmt: skip
    with wired.client(who) as client:
        answer = client.post("/oauth/token", data=form)
    assert answer.status_code == 200, answer.text
    assert f"consent:{consent_id}" in answer.json()["scope"].split()
    return str(answer.json()["access_token"])


def test_R3_3_C3_2_a_consent_token_subscribes_and_pulls_only_within_its_consent(
    broker: Broker, wired: oauth.Broker
) -> None:
    acme = wired.onboard("acme", purposes=BOTH)
    consent_id = broker.consent()
    broker.consent(customer=OTHER_CUSTOMER)  # another customer's consent to acme
    broker.consent(purpose="demand_response")  # and another of this customer's
    token = _code_token(broker, wired, acme, consent_id)
    wide = _token(wired, acme, "feeds:read feeds:write")
    with _with(wired, acme, wide) as client:
        outside = client.post("/v1/feeds", json=SUBJECT | {"subject": OTHER_CUSTOMER}).json()
    outside_asks = [
        SUBJECT | {"subject": OTHER_CUSTOMER},
        SUBJECT | {"purpose": "demand_response"},
        SUBJECT | {"categories": ["consumption", "generation"]},
        SUBJECT | {"scope": "aggregate", "subject": None, "groups": ["F-001"]},
    ]
    with _with(wired, acme, token) as client:
        refused = [client.post("/v1/feeds", json=ask) for ask in outside_asks]
        pulled = client.get(f"/v1/feeds/{outside['feed_id']}/data")
        inside = client.post("/v1/feeds", json=SUBJECT)
        assert inside.status_code == 201, inside.text
        page = client.get(f"/v1/feeds/{inside.json()['feed_id']}/data")
    for answer in [*refused, pulled]:
        assert consent_id in _scope_error(answer, f"consent:{consent_id}")
    assert page.status_code == 200, page.text
    assert _count(broker, DECISIONS) == 1
    assert _count(broker, Feed) == 2


def test_R3_3_a_token_issued_before_a_suspension_stays_refused_after_reinstatement(
    broker: Broker, wired: oauth.Broker
) -> None:
    acme = wired.onboard("acme")
    old = _token(wired, acme, "feeds:read feeds:write")
    service = Recipients(broker.rt.audit, broker.rt.clock)
    broker.clock.advance(dt.timedelta(minutes=1))
    with broker.rt.db.transaction() as session:
        service.suspend(session, "acme", "test", "investigation")
    broker.clock.advance(dt.timedelta(minutes=1))
    with broker.rt.db.transaction() as session:
        service.reinstate(session, "acme", "test", "investigation closed")
    with _with(wired, acme, old) as client:
        refused = client.get("/v1/feeds/fd_none")
    detail = error_of(refused, 401, "InvalidToken")
    assert "before acme was suspended" in detail and "new token" in detail
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    new = _token(wired, acme, "feeds:read")
    with _with(wired, acme, new) as client:
        assert error_of(client.get("/v1/feeds/fd_none"), 404, "NotFound")
