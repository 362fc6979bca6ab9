"""The customer consent flow and the customer's own API over real TLS (
X.1332 R3.4, C2.2): authorization code with PKCE, sign-in with an argon2 account, a consent page
in plain words the customer may narrow, the consent event and its code, and a customer who
reaches only their own consents and access history."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

from broker.ca.authority import CertificateAuthority
from broker.customers.accounts import Accounts
from broker.kit.clock import FixedClock, SystemClock
from broker.oauth.errors import InvalidGrant
from broker.oauth.grant import allow_redirect, redeem
from broker.portal.serve import running_portal
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.runtime.wiring import open_consents
from tests.broker.fakes import settings_for
from tests.broker.parties import enrol

pytestmark = pytest.mark.timeout(60)
REDIRECT = "https://app.acme.example/callback"


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    runtime = Runtime.open(settings, FixedClock(datetime.now(UTC)))
    with runtime.db.transaction() as session:
        Recipients(runtime.audit, runtime.clock).register(
            session,
            Registration("acme-energy", "Acme Energy", Kind.third_party, ("personalised_service",)),
            "test",
        )
        allow_redirect(session, "acme-energy", REDIRECT)
        enrol(session, ["CUST-0000001", "CUST-0000002"])
        accounts = Accounts(runtime.audit, runtime.clock, runtime.hasher)
        accounts.create(session, "alice", "CUST-0000001", "correct horse battery", "test")
        accounts.create(session, "bob", "CUST-0000002", "another long passphrase", "test")
    yield runtime
    runtime.close()


def _ca(rt: Runtime) -> ssl.SSLContext:
    """Customers trust the broker's CA for the server; they present no certificate."""
    return ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def _ask(challenge: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": "acme-energy",
        "redirect_uri": REDIRECT,
        "state": "xyz",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "purpose": "personalised_service",
        "categories": "consumption,generation",
        "granularity": "hourly",
        "days": "90",
        **extra,
    }
    return "/oauth/authorize?" + urlencode(params)


def _sign_in(client: httpx.Client, ask: str, user: str, password: str) -> httpx.Response:
    form = client.get(ask)
    assert form.status_code == 200 and "Sign in" in form.text
    nxt = unescape(re.search(r'name=next value="([^"]*)"', form.text).group(1))  # type: ignore[union-attr]
    return client.post("/login", data={"username": user, "password": password, "next": nxt})


def test_R3_4_customer_approves_a_narrowed_consent_and_the_code_is_redeemed_once(
    rt: Runtime,
) -> None:
    verifier, challenge = _pkce()
    with (
        running_portal(rt, "test") as port,
        httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=10, verify=_ca(rt)) as client,
    ):
        signed = _sign_in(client, _ask(challenge), "alice", "correct horse battery")
        assert signed.status_code == 303
        page = client.get(signed.headers["location"])
        assert "Acme Energy" in page.text and "every hour" in page.text
        assert "personalised service" in page.text
        token = re.search(r'name=token value="([^"]*)"', page.text).group(1)  # type: ignore[union-attr]
        query = unescape(re.search(r'name=query value="([^"]*)"', page.text).group(1))  # type: ignore[union-attr]
        answer = client.post(
            "/oauth/authorize/decision",
            data={
                "query": query,
                "token": token,
                "action": "approve",
                "categories": ["consumption"],
                "granularity": "daily",
                "days": "30",
            },
        )
        assert answer.status_code == 303
        back = urlparse(answer.headers["location"])
        assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
        code = parse_qs(back.query)["code"][0]
        assert parse_qs(back.query)["state"] == ["xyz"]
        mine = client.get("/me/consents").json()
        assert len(mine) == 1 and mine[0]["categories"] == ["consumption"]
        assert mine[0]["granularity"] == "daily"  # narrowed by the customer
        consent_id = mine[0]["consent_id"]
    with (
        rt.db.transaction() as session,
        pytest.raises(InvalidGrant, match="code_verifier does not match"),
    ):
        redeem(session, rt.clock, code, "acme-energy", REDIRECT, secrets.token_urlsafe(48))
    with rt.db.transaction() as session:
        redeemed = redeem(session, rt.clock, code, "acme-energy", REDIRECT, verifier)
    assert redeemed.consent_id == consent_id and redeemed.customer_ref == "CUST-0000001"
    with rt.db.transaction() as session, pytest.raises(InvalidGrant, match="used"):
        redeem(session, rt.clock, code, "acme-energy", REDIRECT, verifier)
    with rt.db.transaction() as session:
        terms = open_consents(rt).refresh(session).get(consent_id)
    assert terms is not None and terms.terms.collection_method == "oauth_consent_page"
    assert terms.terms.explicit is True


def _approve_as_alice(alice: httpx.Client, challenge: str) -> None:
    """Alice signs in from the authorize request and approves it, narrowed to 30 days."""
    page = alice.get(
        _sign_in(alice, _ask(challenge), "alice", "correct horse battery").headers["location"]
    )
    token = re.search(r'name=token value="([^"]*)"', page.text).group(1)  # type: ignore[union-attr]
    query = unescape(re.search(r'name=query value="([^"]*)"', page.text).group(1))  # type: ignore[union-attr]
    data = {"query": query, "token": token, "action": "approve", "categories": ["consumption"],
            "days": "30"}  # fmt: skip
    alice.post("/oauth/authorize/decision", data=data)


def test_C2_2_a_customer_reaches_only_their_own_consents_and_history(rt: Runtime) -> None:
    _, challenge = _pkce()
    with running_portal(rt, "test") as port:
        base = f"https://127.0.0.1:{port}"
        ca = _ca(rt)
        with httpx.Client(base_url=base, timeout=10, verify=ca) as alice:
            _approve_as_alice(alice, challenge)
            consent_id = alice.get("/me/consents").json()[0]["consent_id"]
        with httpx.Client(base_url=base, timeout=10, verify=ca) as bob:
            assert bob.get("/me/consents").status_code == 401  # not signed in
            _sign_in(bob, _ask(challenge), "bob", "another long passphrase")
            assert bob.get("/me/consents").json() == []
            stolen = bob.post(f"/me/consents/{consent_id}/withdraw")
            assert stolen.status_code == 404
            assert bob.get("/me/access").json()["entries"][-1]["type"] == "customer.login"
        with httpx.Client(base_url=base, timeout=10, verify=ca) as alice:
            _sign_in(alice, _ask(challenge), "alice", "correct horse battery")
            assert alice.post(f"/me/consents/{consent_id}/withdraw").json()["status"] == "withdrawn"
            history = [e["type"] for e in alice.get("/me/access").json()["entries"]]
            assert "consent.given" in history and "consent.withdrawn" in history


def test_bad_requests_and_wrong_passwords(rt: Runtime) -> None:
    _, challenge = _pkce()
    with running_portal(rt, "test") as port:
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10, verify=_ca(rt)) as c:
            assert c.get(_ask(challenge, redirect_uri="https://evil.example/cb")).status_code == 400
            assert c.get(_ask(challenge, code_challenge_method="plain")).status_code == 400
            assert c.get(_ask(challenge, purpose="astrology")).status_code == 400
            assert c.get(_ask(challenge, categories="dna")).status_code == 400
            assert c.get(_ask(challenge, client_id="nobody")).status_code == 400
            for _ in range(3):  # then each attempt waits (T7): 429, the password unchecked
                assert _sign_in(c, _ask(challenge), "alice", "wrong password!!").status_code == 401
            waits = _sign_in(c, _ask(challenge), "alice", "correct horse battery")
            assert waits.status_code == 429 and "Too many wrong passwords" in waits.text
            c.cookies.set("broker_session", "AAAA.BBBB")
            forged = c.post(
                "/oauth/authorize/decision", data={"query": "x", "token": "y", "action": "approve"}
            )
            assert forged.status_code == 401


def test_R3_4_a_customer_erases_their_own_data_after_confirming(rt: Runtime) -> None:
    """The portal's erasure: a wrong confirmation erases nothing; the right one withdraws
    every consent, destroys the customer's key, signs them out, and another customer's data is
    untouched."""
    _, challenge = _pkce()
    with running_portal(rt, "test") as port:
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10, verify=_ca(rt)) as bob:
            _sign_in(bob, _ask(challenge), "bob", "another long passphrase")
            refused = bob.post("/me/erase", data={"confirm": "yes"})
            assert refused.status_code == 422 and "erase my data" in refused.json()["detail"]
            with rt.db.transaction() as session:
                rt.data_keys.current_ref(session, "CUST-0000002")  # bob's key, made on use
                rt.data_keys.current_ref(session, "CUST-0000001")
            done = bob.post("/me/erase", data={"confirm": "Erase my data"})
            assert done.status_code == 200 and done.json()["data_keys_destroyed"] == 1
            assert bob.get("/me/consents").status_code == 401  # signed out
    with rt.db.transaction() as session:
        assert rt.data_keys.current_refs(session, ["CUST-0000002"]) == {"CUST-0000002": None}
        assert rt.data_keys.current_refs(session, ["CUST-0000001"])["CUST-0000001"] is not None


def test_C2_2_a_customer_manages_consents_from_their_page_without_javascript(
    rt: Runtime,
) -> None:
    """The browser path: the sign-in form, ``/me`` listing the consent in plain words with a
    withdraw button, the button's form bringing the customer back to a page that says so."""
    browser = {"Accept": "text/html"}
    _, challenge = _pkce()
    with running_portal(rt, "test") as port:
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10, verify=_ca(rt), headers=browser) as alice:
            assert alice.get("/me").headers["location"] == "/login"  # not signed in yet
            form = alice.get("/login")
            assert form.status_code == 200 and "name=password" in form.text
            _approve_as_alice(alice, challenge)
            home = alice.get("/me")
            assert home.status_code == 200 and "personalised service" in home.text
            action = re.search(r'action="(/me/consents/[^"]+/withdraw)"', home.text)
            assert action is not None
            back = alice.post(action.group(1))
            assert back.status_code == 303 and back.headers["location"] == "/me"
            after = alice.get("/me")
            assert "withdrawn" in after.text and "/withdraw" not in after.text


def test_R3_4_an_account_for_a_customer_the_broker_does_not_hold_gets_no_consent(
    rt: Runtime,
) -> None:
    """R3.4: the portal gives consents through the consent service, which refuses a customer the
    broker does not hold (an account made for a mistyped reference): no event, no receipt, no
    authorization code, and the customer sees why."""
    with rt.db.transaction() as session:
        Accounts(rt.audit, rt.clock, rt.hasher).create(
            session, "dave", "CUST-0000404", "a passphrase for dave", "test"
        )
    _, challenge = _pkce()
    with (
        running_portal(rt, "test") as port,
        httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=10, verify=_ca(rt)) as client,
    ):
        signed = _sign_in(client, _ask(challenge), "dave", "a passphrase for dave")
        page = client.get(signed.headers["location"])
        token = re.search(r'name=token value="([^"]*)"', page.text).group(1)  # type: ignore[union-attr]
        query = unescape(re.search(r'name=query value="([^"]*)"', page.text).group(1))  # type: ignore[union-attr]
        data = {"query": query, "token": token, "action": "approve", "categories": ["consumption"]}
        answer = client.post("/oauth/authorize/decision", data=data)
        assert answer.status_code == 400, answer.text
        assert "unknown customer" in answer.text and "location" not in answer.headers
        assert client.get("/me/consents").json() == []
    with rt.db.transaction() as session:
        assert open_consents(rt).consents(session, everything=True) == []
