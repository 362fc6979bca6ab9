"""Customers sign in at an upstream OpenID Connect provider (X.1332 C2.2).

A stand-in provider, written here with FastAPI and served over real TLS on loopback (a CA of
its own), publishes discovery and a JWKS (an EC P-256 key), answers its authorization endpoint
at once with a code for the subject the test chose, and at its token endpoint checks the client
secret, the code (once) and the PKCE verifier before it signs an ID token, which a test may
tamper with. The customer's browser is httpx, driven headlessly through the real portal. The
runtime and both servers are made once per module; the portal's rate is high enough that the
sign-ins here never wait."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.jwk import ECKey
from pydantic import SecretStr, ValidationError

from broker.api.server import serving
from broker.ca.authority import CertificateAuthority
from broker.cli.main import main
from broker.customers.errors import IdentityError
from broker.customers.identities import Identities, check_identity
from broker.errors import ConfigurationError
from broker.kit.clock import SystemClock
from broker.oauth.grant import allow_redirect
from broker.portal.oidc_settings import PortalOidcSettings
from broker.portal.serve import portal_context, running_portal
from broker.portal.web import portal_app
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.regulator.service import AuditQuery, audit_entries
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.runtime.wiring import open_consents
from consent_ledger import ConsentRequest, notice_hash
from demo.receiver import webhook_identity
from tests.broker.fakes import settings_for
from tests.broker.parties import enrol

pytestmark = pytest.mark.timeout(60)
CLIENT_ID, CLIENT_SECRET = "smart-meter-portal", "a long client secret of the portal"
REDIRECT = "https://app.acme.example/callback"
ALICE, BOB = "CUST-0000001", "CUST-0000002"


@dataclass
class StandIn:
    """The provider: who signs in next, what the next ID token looks like, what it has seen."""

    ca: Path
    key: ECKey = field(default_factory=lambda: _ec_key("k1"))
    issuer: str = ""
    redirect_uris: set[str] = field(default_factory=set)
    subject: str = "alice-at-idp"
    extra_claims: dict[str, Any] = field(default_factory=dict)
    signer: ECKey | None = None
    token_status: int | None = None
    codes: dict[str, dict[str, str]] = field(default_factory=dict)

    def reset(self) -> None:
        self.subject, self.extra_claims, self.signer, self.token_status = (
            "alice-at-idp",
            {},
            None,
            None,
        )

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        def discovery() -> dict[str, Any]:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }

        @app.get("/jwks")
        def jwks() -> dict[str, Any]:
            return {"keys": [self.key.as_dict(private=False)]}

        @app.get("/authorize")
        def authorize(request: Request) -> Response:
            q = request.query_params
            assert q["client_id"] == CLIENT_ID and q["redirect_uri"] in self.redirect_uris
            assert q["response_type"] == "code" and "openid" in q["scope"].split()
            assert q["code_challenge_method"] == "S256" and q["nonce"] and q["state"]
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "subject": self.subject,
                "nonce": q["nonce"],
                "challenge": q["code_challenge"],
                "redirect_uri": q["redirect_uri"],
            }
            back = urlencode({"code": code, "state": q["state"]})
            return RedirectResponse(f"{q['redirect_uri']}?{back}", status_code=302)

        @app.post("/token")
        async def token(request: Request) -> Response:
            if self.token_status is not None:
                return JSONResponse({"error": "temporarily_unavailable"}, self.token_status)
            basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if request.headers.get("authorization") != f"Basic {basic}":
                return JSONResponse({"error": "invalid_client"}, 401)
            form = await request.form()
            issued = self.codes.pop(str(form.get("code")), None)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if (
                form.get("grant_type") != "authorization_code"
                or issued is None
                or issued["redirect_uri"] != form.get("redirect_uri")
                or challenge.rstrip(b"=").decode() != issued["challenge"]
            ):
                return JSONResponse({"error": "invalid_grant"}, 400)
            now = int(time.time())
            claims = {
                "iss": self.issuer,
                "sub": issued["subject"],
                "aud": CLIENT_ID,
                "iat": now,
                "exp": now + 300,
                "nonce": issued["nonce"],
                **self.extra_claims,
            }
            signer = self.signer or self.key
            header = {"alg": "ES256", "kid": signer.kid}
            id_token = jwt.encode(header, claims, signer, algorithms=["ES256"])
            body = {"access_token": "at", "token_type": "Bearer", "id_token": id_token}
            return JSONResponse(body, headers={"Cache-Control": "no-store"})

        return app


def _ec_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"})


@dataclass
class World:
    rt: Runtime
    provider: StandIn
    portal: str
    settings: PortalOidcSettings
    trust: ssl.SSLContext

    def browser(self) -> httpx.Client:
        return httpx.Client(timeout=10, verify=self.trust)


def _oidc(issuer: str, ca: Path, **extra: Any) -> PortalOidcSettings:
    return PortalOidcSettings(
        issuer=issuer,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        ca_bundle=ca,
        provider_name="Stand-in ID",
        **extra,
    )


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    settings = settings_for(
        tmp_path_factory.mktemp("oidc") / "var", portal_rate_per_s=1000.0, portal_burst=1000.0
    )
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    runtime = Runtime.open(settings)
    with runtime.db.transaction() as session:
        Recipients(runtime.audit, runtime.clock).register(
            session,
            Registration("acme-energy", "Acme Energy", Kind.third_party, ("personalised_service",)),
            "test",
        )
        allow_redirect(session, "acme-energy", REDIRECT)
        enrol(session, [ALICE, BOB])
    yield runtime
    runtime.close()


@contextmanager
def _serve_portal(rt: Runtime, settings: PortalOidcSettings) -> Iterator[str]:
    """Serve a portal with ``settings``; its callback is known once it listens."""
    with serving(portal_app(rt, settings), portal_context(rt, "test")) as port:
        base = f"https://127.0.0.1:{port}"
        settings.redirect_uri = f"{base}/login/oidc/callback"
        yield base


@pytest.fixture(scope="module")
def world(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ca, cert, key = webhook_identity(tmp_path_factory.mktemp("idp"))
    provider = StandIn(ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    with serving(provider.app(), ctx) as idp_port:
        provider.issuer = f"https://127.0.0.1:{idp_port}"
        settings = _oidc(provider.issuer, ca)
        with _serve_portal(rt, settings) as portal:
            provider.redirect_uris.add(settings.redirect_uri)
            identities = Identities(rt.audit, rt.clock, rt.hasher)
            with rt.db.transaction() as session:
                identities.link(session, ALICE, provider.issuer, "alice-at-idp", "test")
                identities.link(session, BOB, provider.issuer, "bob-at-idp", "test")
            trust = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
            trust.load_verify_locations(cafile=str(ca))
            yield World(rt, provider, portal, settings, trust)


@pytest.fixture
def w(world: World) -> World:
    world.provider.reset()
    return world


def _callback_url(browser: httpx.Client, portal: str, next_: str | None = "/me/consents") -> str:
    """Start at the portal, pass the provider; the URL it sends the browser back to."""
    start = browser.get(f"{portal}/login/oidc", params={} if next_ is None else {"next": next_})
    assert start.status_code == 303, start.text
    at_provider = browser.get(start.headers["location"])
    assert at_provider.status_code == 302, at_provider.text
    return str(at_provider.headers["location"])


def _sign_in(browser: httpx.Client, portal: str, next_: str = "/me/consents") -> httpx.Response:
    return browser.get(_callback_url(browser, portal, next_))


def _consent_request() -> str:
    """Acme Energy's request for consent, as its redirect sends the customer to the portal."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "acme-energy",
            "redirect_uri": REDIRECT,
            "state": "xyz",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "purpose": "personalised_service",
            "categories": "consumption",
            "granularity": "hourly",
            "days": "90",
        }
    )


def _last(rt: Runtime, event_type: str) -> dict[str, Any]:
    with rt.db.transaction() as session:
        entries, _ = audit_entries(session, AuditQuery(types=(event_type,), limit=1000))
    return entries[-1]


def _refused(response: httpx.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert says in unescape(response.text)
    assert "broker_session" not in response.headers.get("set-cookie", "")


def test_C2_2_a_linked_identity_signs_in_and_reaches_only_its_own_data(w: World) -> None:
    with w.rt.db.transaction() as session:
        bobs = open_consents(w.rt).give(
            session,
            ConsentRequest(
                customer=BOB,
                recipient="acme-energy",
                purposes=("personalised_service",),
                categories=("consumption",),
                granularity="hourly",
                expires_at=datetime.now(UTC) + timedelta(days=30),
                notice_hash=notice_hash(b"Acme Energy receives your hourly consumption."),
                collection_method="oauth_consent_page",
                controller="utility.example",
                history_days=30,
                identified=True,
                explicit=True,
            ),
            "test",
        )
    bob_consent = bobs.event.consent_id
    with w.browser() as alice:
        assert alice.get(f"{w.portal}/me/consents").status_code == 401
        signed = _sign_in(alice, w.portal)
        assert signed.status_code == 303 and signed.headers["location"] == "/me/consents"
        assert alice.get(f"{w.portal}/me/consents").json() == []
        assert alice.post(f"{w.portal}/me/consents/{bob_consent}/withdraw").status_code == 404
        login = alice.get(f"{w.portal}/me/access").json()["entries"][-1]
    assert login["type"] == "customer.login" and login["subject"] == w.rt.hasher(ALICE)
    assert login["details"] == {"method": "oidc", "issuer": w.provider.issuer}
    w.provider.subject = "bob-at-idp"
    with w.browser() as bob:
        assert _sign_in(bob, w.portal).status_code == 303
        assert [c["consent_id"] for c in bob.get(f"{w.portal}/me/consents").json()] == [bob_consent]


def test_C2_2_signing_out_ends_a_session_begun_at_the_provider(w: World) -> None:
    """A sign-in at the provider gets a session kept on the server, as a password's does: the
    cookie kept from before sign-out reaches nothing after it."""
    with w.browser() as alice:
        assert _sign_in(alice, w.portal).status_code == 303
        saved = alice.cookies["broker_session"]
        assert alice.get(f"{w.portal}/me/consents").status_code == 200
        assert alice.post(f"{w.portal}/logout").status_code == 303
    with w.browser() as replay:
        replay.cookies.set("broker_session", saved)
        assert replay.get(f"{w.portal}/me/consents").status_code == 401
        assert replay.get(f"{w.portal}/me").headers["location"] == "/login"


def test_R3_4_C2_2_a_consent_request_survives_the_round_trip_through_the_provider(
    w: World,
) -> None:
    ask = _consent_request()
    with w.browser() as alice:
        form = alice.get(w.portal + ask)
        assert form.status_code == 200 and "Sign in with Stand-in ID" in form.text
        link = re.search(r'<a href="([^"]+)">Sign in with Stand-in ID', form.text)
        assert link is not None
        start = alice.get(w.portal + unescape(link.group(1)))
        assert start.status_code == 303
        assert urlsplit(start.headers["location"]).netloc == urlsplit(w.provider.issuer).netloc
        signed = alice.get(alice.get(start.headers["location"]).headers["location"])
        assert signed.status_code == 303 and signed.headers["location"] == ask
        page = alice.get(w.portal + signed.headers["location"])
    assert page.status_code == 200 and "Share your energy data?" in page.text
    assert "Acme Energy" in page.text


def test_C2_2_an_identity_linked_to_no_customer_is_refused_and_audited(w: World) -> None:
    w.provider.subject = "mallory-at-idp"
    with w.browser() as mallory:
        refused = mallory.get(_callback_url(mallory, w.portal))
        _refused(refused, 403, "is not linked to an energy account here")
        assert "subject: mallory-at-idp" in refused.text
        assert mallory.get(f"{w.portal}/me/consents").status_code == 401
    entry = _last(w.rt, "customer.login_refused")
    assert entry["details"] == {"method": "oidc", "issuer": w.provider.issuer, "why": "not_linked"}


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ("forged signature", "id_token:signature"),
        ("unknown key", "id_token:unknown_key"),
        ("wrong aud", "id_token:aud"),
        ("wrong nonce", "id_token:nonce"),
        ("wrong issuer", "id_token:iss"),
        ("expired", "id_token:exp"),
        ("several audiences, no azp", "id_token:azp"),
    ],
)
def test_C2_2_an_id_token_that_does_not_verify_signs_no_one_in(
    w: World, tamper: str, why: str
) -> None:
    now = int(time.time())
    provider = w.provider
    if tamper == "forged signature":
        provider.signer = _ec_key(provider.key.kid or "k1")  # the provider's kid, not its key
    elif tamper == "unknown key":
        provider.signer = _ec_key("k-unknown")
    else:
        changes: dict[str, dict[str, Any]] = {
            "wrong aud": {"aud": "another-client"},
            "wrong nonce": {"nonce": "not-the-nonce-the-portal-sent"},
            "wrong issuer": {"iss": "https://idp.evil.example"},
            "expired": {"iat": now - 900, "exp": now - 600},
            "several audiences, no azp": {"aud": [CLIENT_ID, "another-client"]},
        }
        provider.extra_claims = changes[tamper]
    with w.browser() as alice:
        refused = alice.get(_callback_url(alice, w.portal))
        _refused(refused, 401, "The sign-in could not be verified")
        assert alice.get(f"{w.portal}/me/consents").status_code == 401
    assert _last(w.rt, "customer.login_refused")["details"]["why"] == why


def test_C2_2_a_wrong_missing_or_spent_state_and_a_replayed_code_are_refused(w: World) -> None:
    with w.browser() as alice:
        url = _callback_url(alice, w.portal)
        query = parse_qs(urlsplit(url).query)
        wrong = url.replace(query["state"][0], secrets.token_urlsafe(32))
        _refused(alice.get(wrong), 400, "does not belong to this sign-in")
        assert _last(w.rt, "customer.login_refused")["details"]["why"] == "state_mismatch"
        with w.browser() as stranger:  # no state cookie: a sign-in forged into a browser
            _refused(stranger.get(url), 400, "expired or was not started here")
        assert _last(w.rt, "customer.login_refused")["details"]["why"] == "no_state"
        kept = alice.cookies.get("broker_oidc", path="/login/oidc")
        assert alice.get(url).status_code == 303  # the real answer still signs her in
        assert "broker_oidc" not in alice.cookies  # the state cookie is gone with it
        alice.cookies.set("broker_oidc", kept or "", domain="127.0.0.1", path="/login/oidc")
        _refused(alice.get(url), 400, "already used")
        assert _last(w.rt, "customer.login_refused")["details"]["why"] == "replayed"
        fresh = _callback_url(alice, w.portal)  # a new state, but the code already redeemed
        replayed = fresh.replace(parse_qs(urlsplit(fresh).query)["code"][0], query["code"][0])
        _refused(alice.get(replayed), 401, "would not confirm this sign-in (invalid_grant)")
    assert _last(w.rt, "customer.login_refused")["details"]["why"] == "token_refused:invalid_grant"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/me",
        "//evil.example/me",
        "/\\evil.example/me",
        "/me/../logout",
        "/me/%2E%2e/logout",
        "/logout",
        "javascript:alert(1)",
        "/oauth/authorize/decision",
    ],
)
def test_C2_2_a_next_that_leaves_the_portals_pages_is_refused(w: World, target: str) -> None:
    with w.browser() as browser:
        refused = browser.get(f"{w.portal}/login/oidc", params={"next": target})
    _refused(refused, 400, "Not a page of this portal")
    assert "location" not in refused.headers and "broker_oidc" not in refused.cookies


def test_a_provider_that_refuses_fails_or_does_not_answer_gets_a_page(w: World) -> None:
    with w.browser() as alice:
        url = _callback_url(alice, w.portal)
        denied = url.replace("code=", "error=access_denied&code=")
        _refused(alice.get(denied), 401, "Stand-in ID did not sign you in (access_denied)")
        w.provider.token_status = 503
        _refused(alice.get(_callback_url(alice, w.portal)), 502, "could not confirm the sign-in")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
        with _serve_portal(w.rt, _oidc(dead, w.provider.ca)) as portal:
            with w.browser() as alice:
                down = alice.get(f"{portal}/login/oidc")
            _refused(down, 502, "Stand-in ID could not be reached for its discovery document")


def test_C2_2_a_configured_claim_names_the_customer(w: World) -> None:
    settings = _oidc(w.provider.issuer, w.provider.ca, customer_claim="customer_ref")
    with _serve_portal(w.rt, settings) as portal:
        w.provider.redirect_uris.add(settings.redirect_uri)
        w.provider.subject = "someone-not-in-the-link-table"
        w.provider.extra_claims = {"customer_ref": "CUST-0000009"}
        with w.browser() as carol:
            assert _sign_in(carol, portal).status_code == 303
            login = carol.get(f"{portal}/me/access").json()["entries"][-1]
        assert login["subject"] == w.rt.hasher("CUST-0000009")
        w.provider.extra_claims = {"customer_ref": "CUST|0000009"}
        with w.browser() as carol:
            _refused(_sign_in(carol, portal), 403, "is not linked")


def test_operators_link_and_unlink_identities_from_the_command_line(
    w: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BROKER_DATA_DIR", str(w.rt.settings.data_dir))
    for name in ("BROKER_DATABASE_URL", "BROKER_MODE"):
        monkeypatch.delenv(name, raising=False)
    who = ["--issuer", w.provider.issuer, "--subject", "dave-at-idp"]
    assert main(["customers", "link-identity", "CUST-0000004", *who]) == 0
    assert main(["customers", "link-identity", "CUST-0000004", *who]) == 0  # already: no change
    assert main(["customers", "link-identity", "CUST-0000005", *who]) == 1
    assert "linked to another customer" in capsys.readouterr().err
    bad = ["--issuer", "http://idp.example", "--subject", "dave-at-idp"]
    assert main(["customers", "link-identity", "CUST-0000004", *bad]) == 1
    w.provider.subject = "dave-at-idp"
    with w.browser() as dave:
        assert _sign_in(dave, w.portal).status_code == 303
    assert main(["customers", "unlink-identity", "CUST-0000004", *who]) == 0
    assert main(["customers", "unlink-identity", "CUST-0000004", *who]) == 1
    with w.browser() as dave:
        _refused(_sign_in(dave, w.portal), 403, "is not linked")
    assert _last(w.rt, "customer.identity_unlinked")["subject"] == w.rt.hasher("CUST-0000004")


def test_sign_in_at_a_provider_is_off_unless_configured_and_checked_when_on(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = w.rt
    for name in ("ISSUER", "CLIENT_ID"):
        monkeypatch.delenv(f"BROKER_PORTAL_OIDC_{name}", raising=False)
    with (
        running_portal(rt, "test") as port,
        httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            timeout=10,
            verify=ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem")),
        ) as client,
    ):
        assert client.get("/login/oidc").status_code == 404
        assert client.get("/openapi.json").status_code == 404  # not published anonymously
        assert "/login/oidc" not in portal_app(rt).openapi()["paths"]
        form = client.get(_consent_request())
        assert "Password" in form.text and "Sign in with" not in form.text
    paths = portal_app(rt, w.settings).openapi()["paths"]
    assert {"400", "401", "403", "502"} <= set(paths["/login/oidc/callback"]["get"]["responses"])
    assert not PortalOidcSettings(issuer="https://idp.example").enabled
    refused: list[dict[str, Any]] = [
        {"issuer": "http://idp.example"},
        {"scopes": "profile email"},
        {"redirect_uri": "https://portal.example/elsewhere"},
    ]
    for bad in refused:
        with pytest.raises(ValidationError):
            PortalOidcSettings(client_id=CLIENT_ID, **bad)
    placeholder = PortalOidcSettings(
        issuer="https://idp.example", client_id=CLIENT_ID, client_secret=SecretStr("changeme")
    )
    with pytest.raises(ConfigurationError, match="placeholder"):
        portal_app(rt, placeholder)
    with pytest.raises(IdentityError, match="subject"):
        check_identity("https://idp.example", "")
