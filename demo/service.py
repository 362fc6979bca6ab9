"""The broker-service chapter of ``broker demo``.

Three recipients are onboarded (a CSR each, certificates from the broker's CA): ``energy-app``
and ``insight-co``, third parties, and ``ems-grid``, the operator's EMS. The customer signs in
at the portal and approves (narrowed) energy-app's consent request through the OAuth
authorization-code flow with PKCE, driven headlessly; energy-app gets a certificate-bound token
and pulls the customer's feed, and subscribes a push feed whose pages the broker posts, signed
(RFC 9421), to energy-app's webhook over mutual TLS (the first attempt is refused and retried).
insight-co, without any consent, asks for the same customer's data and for research data and
gets what the policy allows it: nothing, with the reasons. The EMS pulls the feeder aggregate,
which holds no household; a token shown with another recipient's certificate is refused. The
customer withdraws in the portal: energy-app's next page is refused, a signed deletion request
reaches its webhook, and energy-app acknowledges the deletion with a signature. The regulator
sees the deletion, downloads an export over the API and it verifies offline; ``counts`` sums up
the chapter for ``summary.json``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.audit.verify import verify_bundle
from broker.ca.authority import CertificateAuthority
from broker.customers.accounts import Accounts
from broker.delivery.service import PushService, http_poster
from broker.delivery.settings import PushSettings
from broker.oauth.grant import allow_redirect
from broker.portal.serve import running_portal
from broker.recipients.egress import Egress
from broker.recipients.models import Kind
from broker.recipients.service import Registration
from broker.runtime.core import Runtime, audit_public_key_path
from broker.runtime.wiring import (
    open_ca,
    open_feeds,
    open_push,
    open_recipients,
    server_identity,
)
from demo.receiver import (
    WebhookReceiver,
    serve_webhook,
    webhook_identity,
    webhook_server_context,
)

APP, EMS, OTHER = "energy-app", "ems-grid", "insight-co"
REDIRECT = "https://energy-app.example/callback"
PASSWORD = "demo password, long enough"  # noqa: S105 (the demo customer's, in a demo data directory)


def _party(rt: Runtime, out: Path, name: str) -> tuple[Path, Path]:
    """A key and CSR made by the recipient; the certificate issued by the broker's CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    with rt.db.transaction() as session:
        issued = open_recipients(rt).issue_certificate(
            session, open_ca(rt), name, csr.public_bytes(serialization.Encoding.PEM), "demo"
        )
    key_path = out / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return issued.cert_path, key_path


def _consent_flow(rt: Runtime) -> tuple[str, str]:
    """(code, PKCE verifier) of the customer's approval, for energy-app to redeem."""
    """The customer approves energy-app's request in the portal, narrowed to daily data."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    ask = "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": APP,
            "redirect_uri": REDIRECT,
            "state": "s1",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "purpose": "personalised_service",
            "categories": "consumption",
            "granularity": "hourly",
            "days": "90",
        }
    )
    ca = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    with (
        running_portal(rt, "demo") as port,
        httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca, timeout=10) as browser,
    ):
        form = browser.get(ask)
        nxt = unescape(_field(form.text, "next"))
        signed = browser.post(
            "/login", data={"username": "customer3", "password": PASSWORD, "next": nxt}
        )
        page = browser.get(signed.headers["location"])
        answer = browser.post(
            "/oauth/authorize/decision",
            data={
                "query": unescape(_field(page.text, "query")),
                "token": _field(page.text, "token"),
                "action": "approve",
                "categories": ["consumption"],
                "granularity": "hourly",
                "days": "30",
            },
        )
        code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
    return code, verifier


def _field(text: str, name: str) -> str:
    match = re.search(rf'name={name} value="([^"]*)"', text)
    if match is None:
        raise RuntimeError(f"the portal page has no {name} field")
    return match.group(1)


def _withdraw(rt: Runtime, consent_id: str) -> str:
    ca = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    with (
        running_portal(rt, "demo") as port,
        httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca, timeout=10) as browser,
    ):
        browser.post("/login", data={"username": "customer3", "password": PASSWORD})
        return str(browser.post(f"/me/consents/{consent_id}/withdraw").json()["status"])


PUSH = PushSettings(backoff_base_s=0.2, backoff_cap_s=2.0, timeout_s=10.0, max_attempts=5)


def _push_until(push: PushService, post: Any, done: Any, rounds: int = 40) -> None:
    """Worker rounds (as ``broker serve`` runs them) until ``done()``; bounded."""
    for _ in range(rounds):
        push.round(post)
        if done():
            return
        time.sleep(0.25)
    raise RuntimeError("the push worker did not finish in time")


@contextmanager
def _webhook(
    rt: Runtime, out: Path, jwks: dict[str, Any], key: ECKey
) -> Iterator[tuple[WebhookReceiver, PushService, Any]]:
    """energy-app's webhook (the reference receiver) on loopback, registered by the operator,
    and the broker's push worker with its client certificate."""
    receiver = WebhookReceiver.for_jwks(APP, jwks, key, fail_first=1)
    hook_ca, cert, cert_key = webhook_identity(out / "webhook")
    ctx = webhook_server_context(rt.settings.ca_dir / "ca.pem", cert, cert_key)
    settings = PUSH.model_copy(update={"ca_file": hook_ca})
    with serve_webhook(receiver, ctx) as port:
        # a loopback webhook is the demo settings' explicit exception (webhook_allow_private),
        # for the one port the receiver listens on
        egress = Egress.of(rt.settings.model_copy(update={"webhook_private_ports": [port]}))
        poster = http_poster(settings, server_identity(rt, open_ca(rt), "demo"), egress)
        try:
            with rt.db.transaction() as session:
                open_recipients(rt, egress).set_webhook(
                    session, APP, f"https://127.0.0.1:{port}/hook", "demo"
                )
            feeds = open_feeds(rt)
            yield receiver, open_push(rt, feeds, settings), poster
        finally:
            poster.close()


def _onboard(rt: Runtime, customer: str, app_key: ECKey) -> None:
    with rt.db.transaction() as session:
        recipients = open_recipients(rt)
        if recipients.find(session, APP) is None:  # registered when the customer consented
            recipients.register(
                session,
                Registration(APP, "Energy App", Kind.third_party, ("personalised_service",)),
                "demo",
            )
        recipients.add_key(session, APP, app_key.as_dict(private=False), "demo")
        recipients.register(
            session, Registration(EMS, "Grid EMS", Kind.ems, ("grid_operations",)), "demo"
        )
        recipients.register(
            session,
            Registration(OTHER, "Insight Co", Kind.third_party,
                         ("personalised_service", "energy_efficiency_research")),
            "demo",
        )  # fmt: skip
        allow_redirect(session, APP, REDIRECT)
        Accounts(rt.audit, rt.clock, rt.hasher).create(
            session, "customer3", customer, PASSWORD, "demo"
        )


def _feed(client: httpx.Client, token: str, **spec: Any) -> httpx.Response:
    body = {"categories": ["consumption"], "format": "json"} | spec
    return client.post("/v1/feeds", headers={"Authorization": f"Bearer {token}"}, json=body)


def _token(client: httpx.Client, who: str, scope: str) -> str:
    data = {"grant_type": "client_credentials", "client_id": who, "scope": scope}
    return str(client.post("/oauth/token", data=data).json()["access_token"])


def _refused(response: httpx.Response) -> str:
    detail = response.json().get("detail", "") if response.content else ""
    codes = detail.split(": ", 1)[1] if ": " in detail else detail
    return f"HTTP {response.status_code} ({codes})"


def service_story(rt: Runtime, customer: str, out: Path, first_day: datetime) -> dict[str, Any]:
    keys_dir = out / "recipients"
    keys_dir.mkdir(exist_ok=True)
    app_key = ECKey.generate_key("P-256", parameters={"kid": f"{APP}-1"})
    _onboard(rt, customer, app_key)
    app_cert, ems_cert = _party(rt, keys_dir, APP), _party(rt, keys_dir, EMS)
    other_cert = _party(rt, keys_dir, OTHER)
    regulator = _regulator(rt)
    code, verifier = _consent_flow(rt)
    ca_pem = rt.settings.ca_dir / "ca.pem"
    story: dict[str, Any] = {}
    counts = {"recipients_onboarded": 3, "pull_pages": 0, "requests_refused": 0}
    since = first_day.isoformat()
    with running(build(rt, "demo")) as port:
        url = f"https://127.0.0.1:{port}"

        def client(cert: tuple[Path, Path]) -> httpx.Client:
            return httpx.Client(base_url=url, verify=client_context(ca_pem, *cert), timeout=30)

        with client(app_cert) as app, client(ems_cert) as ems, client(other_cert) as other:
            grant = {
                "grant_type": "authorization_code",
                "client_id": APP,
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            }
            granted = app.post("/oauth/token", data=grant).json()
            app_token = granted["access_token"]
            consent_id = granted["scope"].split("consent:")[1].split()[0]
            replayed = app.post("/oauth/token", data=grant).json().get("error")
            story["consent_flow"] = (
                f"consent page approved (narrowed to 30 days); code redeemed "
                f"at /oauth/token for a bound token naming {consent_id}; "
                f"redeemed again: {replayed}"
            )
            ems_token = _token(ems, EMS, "ems:read ems:write")
            mine = {"Authorization": f"Bearer {app_token}"}
            feed = _feed(app, app_token, purpose="personalised_service", granularity="hourly",
                         scope="subject", subject=customer, period_from=since,
                         format="espi").json()  # fmt: skip
            page = app.get(f"/v1/feeds/{feed['feed_id']}/data", headers=mine)
            counts["pull_pages"] += 1
            story["energy_app_pull"] = (
                f"HTTP {page.status_code}, Green Button ESPI, "
                f"{page.content.count(b'IntervalReading>') // 2} hourly readings"
            )
            stolen = ems.get(f"/v1/feeds/{feed['feed_id']}/data", headers=mine)
            counts["requests_refused"] += 1
            story["token_with_another_certificate"] = (
                f"HTTP {stolen.status_code} {stolen.json().get('error', '')}"
            )
            jwks = app.get("/.well-known/jwks.json").json()
            with _webhook(rt, out, jwks, app_key) as (receiver, push, post):
                pushed = _feed(app, app_token, purpose="personalised_service",
                               granularity="hourly", scope="subject", subject=customer,
                               period_from=since, delivery="push").json()  # fmt: skip
                _push_until(push, post, lambda: len(receiver.held) >= 1)
                receipts = app.get("/v1/deliveries", headers=mine).json()
                story["energy_app_push"] = (
                    f"feed {pushed['feed_id']}: {len(receiver.held)} signed page(s) posted to "
                    f"energy-app's webhook over mutual TLS, after {receiver.answered_503} "
                    f"refused attempt(s) retried with backoff; "
                    f"{sum(1 for r in receipts if r['signed_receipt'])} signed receipt(s) kept"
                )
                story.update(_without_consent(other, customer, since, counts))
                theirs = {"Authorization": f"Bearer {ems_token}"}
                agg = _feed(ems, ems_token, purpose="grid_operations", granularity="15min",
                            scope="aggregate", groups=["F-001", "F-002"],
                            period_from=since).json()  # fmt: skip
                ems_page = ems.get(f"/v1/feeds/{agg['feed_id']}/data", headers=theirs)
                counts["pull_pages"] += 1
                body = ems_page.text
                story["ems_pull"] = (
                    f"HTTP {ems_page.status_code}, {body.count('released')} cells released, "
                    f"{body.count('threshold not met')} withheld; household ids in it: "
                    f"{'yes' if ('M0' in body or 'ps1:' in body or 'CUST-' in body) else 'none'}"
                )
                story["withdrawal"] = _withdraw(rt, consent_id)
                after = app.get(
                    f"/v1/feeds/{feed['feed_id']}/data",
                    headers=mine,
                    params={"cursor": page.headers.get("X-Next-Cursor", "")},
                )
                counts["requests_refused"] += 1
                story["energy_app_after_withdrawal"] = (
                    f"HTTP {after.status_code} {after.json().get('error', '')}"
                )
                _push_until(push, post, lambda: bool(receiver.deletion_requests))
                (request,) = receiver.deletion_requests
                ack = receiver.acknowledge(request)
                erasing = {"Authorization": f"Bearer {_token(app, APP, 'deletions:write')}"}
                acked = app.post(f"/v1/deletions/{request['deletion_id']}/ack", headers=erasing,
                                 json={"ack": ack})  # fmt: skip
                story["deletion"] = (
                    f"signed deletion request for {len(request['release_ids'])} release(s) "
                    f"reached the webhook; energy-app deleted them and acknowledged (signed): "
                    f"HTTP {acked.status_code} {acked.json().get('status')}"
                )
        with httpx.Client(
            base_url=url, verify=client_context(ca_pem, *regulator), timeout=30
        ) as reg:
            deletions = reg.get("/v1/regulator/deletions").json()
            export = reg.get("/v1/regulator/export")
            (out / "regulator-export.jsonl").write_bytes(export.content)
            metrics = reg.get("/v1/regulator/metrics").json()
    vkey = audit_public_key_path(rt.settings).read_text().strip()
    verified = verify_bundle(out / "regulator-export.jsonl", vkey)
    story["regulator_export"] = f"{verified.entries} entries, verified offline"
    story["regulator_deletions"] = [f"{d['recipient']}: {d['status']}" for d in deletions]
    story["regulator_metrics"] = {
        "consent_events": metrics["consent_events_by_kind"],
        "releases": metrics["releases_by_purpose_and_tier"],
        "deletions": metrics["deletions"],
        "push_deliveries": metrics["push_deliveries_by_status"],
    }
    events = metrics["consent_events_by_kind"]
    story["counts"] = counts | {
        "consents_given": events.get("given", 0),
        "consents_withdrawn": events.get("withdrawn", 0),
        "releases": sum(sum(t.values()) for t in metrics["releases_by_purpose_and_tier"].values()),
        "pushes_delivered": metrics["push_deliveries_by_status"].get("delivered", 0),
        "push_retries": receiver.answered_503,
        "deletion_requests": metrics["deletions"]["requested"],
        "deletions_acknowledged": metrics["deletions"]["acknowledged"],
        "deletions_overdue": metrics["deletions"]["overdue"],
        "regulator_export_entries": verified.entries,
    }
    return story


def _without_consent(
    other: httpx.Client, customer: str, since: str, counts: dict[str, int]
) -> dict[str, str]:
    """insight-co has no consent: the customer's data and research data are both refused, with
    the policy's reasons."""
    token = _token(other, OTHER, "feeds:read feeds:write")
    theirs = {"Authorization": f"Bearer {token}"}
    out = {}
    asks: dict[str, dict[str, Any]] = {
        "insight_co_household_data": {"purpose": "personalised_service", "granularity": "hourly",
                                      "scope": "subject", "subject": customer},
        "insight_co_research_aggregate": {"purpose": "energy_efficiency_research",
                                          "granularity": "daily", "scope": "aggregate",
                                          "groups": ["F-001"]},
    }  # fmt: skip
    for name, spec in asks.items():
        feed = _feed(other, token, period_from=since, **spec).json()
        page = other.get(f"/v1/feeds/{feed['feed_id']}/data", headers=theirs)
        if page.status_code == 200:
            counts["pull_pages"] += 1
            out[name] = f"HTTP 200, tier {page.json()['release']['tier']}"
        else:
            counts["requests_refused"] += 1
            out[name] = _refused(page)
    return out


def _regulator(rt: Runtime) -> tuple[Path, Path]:
    with rt.db.transaction() as session:
        issued = CertificateAuthority(rt.settings, rt.clock).issue(
            session, rt.audit, role="regulator", name="energy-regulator", actor="demo"
        )
    if issued.key_path is None:
        raise RuntimeError("the CA kept no key for the regulator's certificate")
    return issued.cert_path, issued.key_path


def first_day_of(days: int) -> datetime:
    start = datetime.now(UTC).date() - timedelta(days=days)
    return datetime(start.year, start.month, start.day, tzinfo=UTC)
