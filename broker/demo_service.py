"""The broker-service chapter of ``broker demo`` (issue 6, as far as it is built).

Two recipients are onboarded (a CSR each, certificates from the broker's CA): ``energy-app``, a
third party, and ``ems-grid``, the operator's EMS. The customer signs in at the portal and
approves (narrowed) energy-app's consent request through the OAuth authorization-code flow with
PKCE, driven headlessly; energy-app gets a certificate-bound token and pulls the customer's
feed; the EMS pulls the feeder aggregate, which holds no household; a token shown with the
other recipient's certificate is refused; the customer withdraws in the portal and
energy-app's next page is refused; the regulator downloads an export over the API and it
verifies offline.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
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

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.audit.verify import verify_bundle
from broker.ca.authority import CertificateAuthority
from broker.ca.service import open_ca
from broker.portal.accounts import Accounts
from broker.portal.flow import allow_redirect
from broker.portal.serve import running_portal
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.runtime import Runtime, audit_public_key_path

APP, EMS = "energy-app", "ems-grid"
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
        issued = Recipients(rt.audit, rt.clock).issue_certificate(
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


def service_story(rt: Runtime, customer: str, out: Path, first_day: datetime) -> dict[str, Any]:
    keys_dir = out / "recipients"
    keys_dir.mkdir(exist_ok=True)
    with rt.db.transaction() as session:
        recipients = Recipients(rt.audit, rt.clock)
        recipients.register(
            session,
            Registration(APP, "Energy App", Kind.third_party, ("personalised_service",)),
            "demo",
        )
        recipients.register(
            session, Registration(EMS, "Grid EMS", Kind.ems, ("grid_operations",)), "demo"
        )
        allow_redirect(session, APP, REDIRECT)
        Accounts(rt.audit, rt.clock, rt.hasher).create(
            session, "customer3", customer, PASSWORD, "demo"
        )
    app_cert, ems_cert = _party(rt, keys_dir, APP), _party(rt, keys_dir, EMS)
    regulator = _regulator(rt)
    code, verifier = _consent_flow(rt)
    ca_pem = rt.settings.ca_dir / "ca.pem"
    story: dict[str, Any] = {}
    with running(build(rt, "demo")) as port:
        url = f"https://127.0.0.1:{port}"

        def client(cert: tuple[Path, Path]) -> httpx.Client:
            return httpx.Client(base_url=url, verify=client_context(ca_pem, *cert), timeout=30)

        with client(app_cert) as app, client(ems_cert) as ems:
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
            ems_token = ems.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "client_id": EMS, "scope": "ems:read"},
            ).json()["access_token"]
            mine = {"Authorization": f"Bearer {app_token}"}
            feed = app.post(
                "/v1/feeds",
                headers=mine,
                json={
                    "purpose": "personalised_service",
                    "categories": ["consumption"],
                    "granularity": "hourly",
                    "scope": "subject",
                    "subject": customer,
                    "period_from": first_day.isoformat(),
                    "format": "espi",
                },
            ).json()
            page = app.get(f"/v1/feeds/{feed['feed_id']}/data", headers=mine)
            story["energy_app_pull"] = (
                f"HTTP {page.status_code}, Green Button ESPI, "
                f"{page.content.count(b'IntervalReading>') // 2} hourly readings"
            )
            stolen = ems.get(f"/v1/feeds/{feed['feed_id']}/data", headers=mine)
            story["token_with_another_certificate"] = (
                f"HTTP {stolen.status_code} {stolen.json().get('error', '')}"
            )
            theirs = {"Authorization": f"Bearer {ems_token}"}
            agg = ems.post(
                "/v1/feeds",
                headers=theirs,
                json={
                    "purpose": "grid_operations",
                    "categories": ["consumption"],
                    "granularity": "15min",
                    "scope": "aggregate",
                    "groups": ["F-001", "F-002"],
                    "period_from": first_day.isoformat(),
                    "format": "json",
                },
            ).json()
            ems_page = ems.get(f"/v1/feeds/{agg['feed_id']}/data", headers=theirs)
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
            story["energy_app_after_withdrawal"] = (
                f"HTTP {after.status_code} {after.json().get('error', '')}"
            )
        with httpx.Client(
            base_url=url, verify=client_context(ca_pem, *regulator), timeout=30
        ) as reg:
            export = reg.get("/v1/regulator/export")
            (out / "regulator-export.jsonl").write_bytes(export.content)
            metrics = reg.get("/v1/regulator/metrics").json()
    vkey = audit_public_key_path(rt.settings).read_text().strip()
    verified = verify_bundle(out / "regulator-export.jsonl", vkey)
    story["regulator_export"] = f"{verified.entries} entries, verified offline"
    story["regulator_metrics"] = {
        "consent_events": metrics["consent_events_by_kind"],
        "decisions_allowed": metrics["decisions_allowed_by_purpose_and_tier"],
    }
    return story


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
