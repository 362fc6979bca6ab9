"""``POST /oauth/token`` and ``require_token`` over real mutual TLS on loopback (C3.2, R3.3,
R4.3, T7/C1.8): certificate-bound client-credentials tokens for registered recipients."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt

from broker.kit.clock import FixedClock
from broker.oauth.settings import OAuthSettings
from broker.oauth.tokens import TokenCodec, load_token_key
from broker.recipients.models import Kind
from broker.recipients.service import Recipients
from broker.runtime.wiring import open_ca
from tests.broker.oauth.conftest import ISSUER, Broker, Party

pytestmark = pytest.mark.timeout(60)
REFUSED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _x5t(party: Party) -> str:
    der = x509.load_pem_x509_certificate(party.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _call(broker: Broker, who: Party, token: str, path: str = "/v1/test/feeds") -> httpx.Response:
    with broker.client(who) as client:
        return client.get(path, headers={"Authorization": f"Bearer {token}"})


def _jwt_token(broker: Broker, who: Party, assertion: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "scope": "feeds:read",
        "client_assertion_type": ASSERTION,
        "client_assertion": assertion,
    }
    with broker.client(who) as client:
        return client.post("/oauth/token", data=form)


def test_C3_2_tls_client_auth_gives_a_token_bound_to_the_certificate(broker: Broker) -> None:
    acme = broker.onboard("acme")
    response = broker.token(acme, "feeds:read purpose:personalised_service")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    claims = _claims(body["access_token"])
    assert claims["sub"] == "acme" and claims["iss"] == ISSUER
    assert claims["cnf"] == {"x5t#S256": _x5t(acme)}
    assert claims["scope"] == "feeds:read purpose:personalised_service"
    assert int(claims["exp"]) - int(claims["iat"]) == 300  # type: ignore[call-overload]
    assert _call(broker, acme, body["access_token"]).json() == {"recipient": "acme"}


def test_C3_2_private_key_jwt_gives_a_bound_token(broker: Broker) -> None:
    acme = broker.onboard("acme")
    response = _jwt_token(broker, acme, acme.assertion())
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert _claims(token)["cnf"] == {"x5t#S256": _x5t(acme)}
    assert _call(broker, acme, token).status_code == 200


def test_C3_2_replayed_assertion_is_refused(broker: Broker) -> None:
    acme = broker.onboard("acme")
    assertion = acme.assertion()
    assert _jwt_token(broker, acme, assertion).status_code == 200
    replay = _jwt_token(broker, acme, assertion)
    assert replay.status_code == 400
    assert replay.json() == {
        "error": "invalid_client",
        "error_description": "JWT ID is used before.",
    }


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"aud": "https://elsewhere.example/oauth/token"}, "aud"),
        ({"exp": 4_000_000_000}, "ahead"),
        ({"iss": "someone-else"}, "Issuer and Subject"),
        ({"exp": 1_000_000}, "expired"),
    ],
)
def test_C3_2_assertion_with_bad_claims_is_refused(
    broker: Broker, override: dict[str, object], why: str
) -> None:
    acme = broker.onboard("acme")
    response = _jwt_token(broker, acme, acme.assertion(**override))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"
    assert why in response.json()["error_description"]


def test_C3_2_assertion_signed_by_another_key_is_refused(broker: Broker) -> None:
    acme, mallory = broker.onboard("acme"), broker.onboard("mallory")
    forged = Party("acme", acme.cert, acme.key, mallory.jwk).assertion()
    response = _jwt_token(broker, acme, forged)
    assert response.status_code == 400 and response.json()["error"] == "invalid_client"


def test_C3_2_token_shown_with_another_clients_certificate_is_refused(broker: Broker) -> None:
    acme, other = broker.onboard("acme"), broker.onboard("other")
    token = broker.token(acme).json()["access_token"]
    response = _call(broker, other, token)
    assert response.status_code == 401
    assert response.json()["error"] == "InvalidToken"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "another client certificate" in response.json()["detail"]


def test_C3_2_client_id_of_another_recipient_over_my_certificate_is_refused(
    broker: Broker,
) -> None:
    acme, mallory = broker.onboard("acme"), broker.onboard("mallory")
    response = broker.token(acme, via=mallory)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"
    assert "not one of acme" in response.json()["error_description"]


def test_C3_2_expired_token_is_refused(broker: Broker) -> None:
    acme = broker.onboard("acme")
    past = FixedClock(broker.rt.clock.now() - timedelta(minutes=10))
    codec = TokenCodec(load_token_key(broker.rt.settings), OAuthSettings(issuer=ISSUER), past)
    stale = codec.issue("acme", ["feeds:read"], _x5t(acme))["access_token"]
    response = _call(broker, acme, stale)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_C3_2_token_signed_by_another_key_or_missing_is_refused(broker: Broker) -> None:
    acme = broker.onboard("acme")
    forged = jwt.encode({"alg": "ES256"}, {"sub": "acme"}, acme.jwk)
    assert _call(broker, acme, forged).status_code == 401
    with broker.client(acme) as client:
        missing = client.get("/v1/test/feeds")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer ")


def test_R3_3_suspended_recipient_is_refused_at_once(broker: Broker) -> None:
    acme = broker.onboard("acme")
    token = broker.token(acme).json()["access_token"]
    with broker.rt.db.transaction() as session:
        Recipients(broker.rt.audit, broker.rt.clock).suspend(session, "acme", "test", "audit")
    response = _call(broker, acme, token)
    assert response.status_code == 401 and "suspended" in response.json()["detail"]
    refused = broker.token(acme)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_client",
        "error_description": "client acme is suspended",
    }
    assert _jwt_token(broker, acme, acme.assertion()).status_code == 400


def test_C3_2_revoked_recipient_certificate_is_refused(broker: Broker) -> None:
    acme = broker.onboard("acme")
    token = broker.token(acme).json()["access_token"]
    with broker.rt.db.transaction() as session:
        Recipients(broker.rt.audit, broker.rt.clock).revoke(
            session, open_ca(broker.rt), "acme", "test", "contract ended"
        )
    try:
        response = _call(broker, acme, token)
    except REFUSED:  # the handshake already refuses it
        return
    assert response.status_code == 403 and "revoked" in response.json()["detail"]


def test_R4_3_scopes_are_denied_by_default(broker: Broker) -> None:
    acme = broker.onboard("acme")
    grid = broker.onboard("grid", Kind.ems, ("grid_operations",))
    nobody = broker.onboard("nobody", purposes=())
    for who, scope in [
        (acme, "ems:read"),
        (acme, "purpose:marketing"),
        (grid, "feeds:read"),
        (nobody, "feeds:read"),
        (acme, ""),
    ]:
        response = broker.token(who, scope)
        assert response.status_code == 400, (who.name, scope)
        assert response.json()["error"] == "invalid_scope"
    ems_token = broker.token(grid, "ems:read").json()["access_token"]
    assert _call(broker, grid, ems_token, "/v1/test/ems").status_code == 200
    denied = _call(broker, grid, ems_token, "/v1/test/feeds")
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", "client_id": "acme"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "client_id": "acme"}, "invalid_grant"),
        ({"client_id": "acme", "scope": "feeds:read"}, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "feeds:read"}, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "ghost"}, "invalid_client"),
        (
            {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION,
                "client_assertion": "not.a.jwt",
            },
            "invalid_client",
        ),
        ({"grant_type": "client_credentials", "client_assertion": "x"}, "invalid_client"),
    ],
)
def test_T7_bad_token_requests_get_clear_errors(
    broker: Broker, form: dict[str, str], error: str
) -> None:
    acme = broker.onboard("acme")
    with broker.client(acme) as client:
        response = client.post("/oauth/token", data=form)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert response.json().get("error_description")


def test_T7_repeated_parameter_and_wrong_media_type_are_invalid_requests(broker: Broker) -> None:
    acme = broker.onboard("acme")
    with broker.client(acme) as client:
        twice = client.post(
            "/oauth/token",
            content=b"grant_type=client_credentials&client_id=acme&client_id=acme",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        as_json = client.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert twice.status_code == 400 and "repeated" in twice.json()["error_description"]
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"


def test_C1_8_oversized_token_request_is_413(broker: Broker) -> None:
    acme = broker.onboard("acme")
    with broker.client(acme) as client:
        response = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_assertion": "x" * 20_000},
        )
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"


def test_C1_8_a_client_over_its_rate_gets_429_with_retry_after(broker: Broker) -> None:
    acme, other = broker.onboard("acme"), broker.onboard("other")
    with broker.client(acme) as client:
        answers = [
            client.post("/oauth/token", data={"grant_type": "x"}).status_code for _ in range(30)
        ]
        throttled = client.post("/oauth/token", data={"grant_type": "x"})
    assert 429 in answers and throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert throttled.json()["error"] == "Throttled"
    assert broker.token(other).status_code == 200  # the others keep their own bucket


def test_token_issuance_is_audited(broker: Broker) -> None:
    from sqlalchemy import text

    acme = broker.onboard("acme")
    assert broker.token(acme).status_code == 200
    with broker.rt.db.engine.connect() as conn:
        types = [
            r[0] for r in conn.execute(text("SELECT event_type FROM audit_entry ORDER BY seq"))
        ]
    assert "recipient.registered" in types and "recipient.key_added" in types
    assert types[-1] == "oauth.token_issued"
