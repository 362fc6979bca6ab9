"""The authorization-code grant at the token endpoint (RFC 6749 §4.1.3 with
PKCE, RFC 7636): the code the customer's consent page issued is redeemed once, by the client it
was issued to, over its mutual-TLS connection, with the PKCE verifier; the token is bound to the
certificate and names the consent."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta

from broker.kit.clock import FixedClock
from broker.oauth.grant import ConsentAsk, allow_redirect, issue_code
from tests.broker.oauth.conftest import Broker, Party

REDIRECT = "https://acme.example/cb"


def _code(broker: Broker, client_id: str, minutes_ago: int = 0) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    ask = ConsentAsk(
        client_id,
        REDIRECT,
        "s",
        challenge.rstrip(b"=").decode(),
        "personalised_service",
        ("consumption",),
        "daily",
        30,
    )
    with broker.rt.db.transaction() as session:
        allow_redirect(session, client_id, REDIRECT)
        issued_at = FixedClock(datetime.now(UTC) - timedelta(minutes=minutes_ago))
        code = issue_code(session, issued_at, ask, "CUST-1", "cn_demo")
    return code, verifier


def _redeem(
    broker: Broker, who: Party, code: str, verifier: str, client_id: str = ""
) -> dict[str, str]:
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id or who.name,
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    with broker.client(who) as client:
        answer = client.post("/oauth/token", data=form)
    body: dict[str, str] = answer.json()
    body["status"] = str(answer.status_code)
    return body


def test_C3_2_code_redeemed_once_with_its_verifier_for_a_bound_token_naming_the_consent(
    broker: Broker,
) -> None:
    acme = broker.onboard("acme")
    code, verifier = _code(broker, "acme")
    wrong = _redeem(broker, acme, code, secrets.token_urlsafe(48))
    assert (wrong["status"], wrong["error"]) == ("400", "invalid_grant")
    good = _redeem(broker, acme, code, verifier)
    assert good["status"] == "200", good
    payload = good["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["scope"] == "feeds:read feeds:write consent:cn_demo"
    assert claims["cnf"]["x5t#S256"]
    with broker.client(acme) as client:  # the token works where feeds:read is needed
        bearer = {"Authorization": f"Bearer {good['access_token']}"}
        assert client.get("/v1/test/feeds", headers=bearer).json() == {"recipient": "acme"}
    again = _redeem(broker, acme, code, verifier)
    assert (again["status"], again["error"]) == ("400", "invalid_grant")


def test_C3_2_a_code_is_only_for_the_client_it_was_issued_to(broker: Broker) -> None:
    acme, rival = broker.onboard("acme"), broker.onboard("rival")
    code, verifier = _code(broker, "acme")
    stolen = _redeem(broker, rival, code, verifier)
    assert (stolen["status"], stolen["error"]) == ("400", "invalid_grant")
    impersonated = _redeem(broker, rival, code, verifier, client_id="acme")
    assert (impersonated["status"], impersonated["error"]) == ("400", "invalid_client")
    old, old_verifier = _code(broker, "acme", minutes_ago=6)  # codes live 5 minutes
    expired = _redeem(broker, acme, old, old_verifier)
    assert (expired["status"], expired["error"]) == ("400", "invalid_grant")
