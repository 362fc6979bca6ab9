"""A recipient's purposes and certificates over real mutual TLS (C3.2, R3.3): purposes come from
the purpose catalogue, a certificate lives at most ``recipient_cert_max_days``, and a renewal
beyond ``recipient_cert_max_live`` live certificates retires the oldest into the CRL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlmodel import col, select

from broker.audit.models import AuditEntry
from broker.ca.models import IssuedCertificate
from broker.recipients.models import Recipient
from tests.broker.oauth.conftest import Broker, Party
from tests.broker.recipients.test_api import _operator

pytestmark = pytest.mark.timeout(60)
REFUSED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


def _registrations(broker: Broker) -> tuple[int, int]:
    with broker.rt.db.transaction() as session:
        rows = len(session.exec(select(Recipient)).all())
        audited = session.exec(
            select(AuditEntry).where(col(AuditEntry.event_type) == "recipient.registered")
        ).all()
        return rows, len(audited)


def test_C3_2_a_registration_for_a_purpose_outside_the_catalogue_is_refused(
    broker: Broker,
) -> None:
    """R3.3: a recipient may ask data only for purposes the privacy officer's catalogue
    defines; one registered for ``selling_data`` would otherwise pass every purpose check."""
    body = {"recipient_id": "newco", "display_name": "NewCo", "kind": "supplier"}
    with broker.client(_operator(broker)) as client:
        before = _registrations(broker)
        response = client.post("/v1/recipients", json=body | {"purposes": ["billing", "resale"]})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "InvalidRecipient"
        assert "purposes not in the purpose catalogue: 'resale'" in response.json()["detail"]
        assert _registrations(broker) == before
        assert client.get("/v1/recipients/newco").status_code == 404
        made = client.post("/v1/recipients", json=body | {"purposes": ["billing"]})
        assert made.status_code == 201, made.text


def _csr() -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def _renew(broker: Broker, who: Party, tmp: Path, n: int, **body: object) -> httpx.Response:
    """The recipient renews its own certificate; on success ``tmp/acme-<n>.pem/.key`` hold it."""
    csr, key = _csr()
    with broker.client(who) as client:
        response = client.post("/v1/recipients/acme/certificate", json={"csr_pem": csr, **body})
    if response.status_code == 200:
        (tmp / f"acme-{n}.pem").write_text(response.json()["certificate_pem"])
        (tmp / f"acme-{n}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return response


def _healthz(broker: Broker, who: Party) -> int:
    try:
        with broker.client(who) as client:
            return client.get("/healthz").status_code
    except REFUSED:
        return 0


def test_C3_2_a_recipient_cannot_mint_itself_long_lived_certificates(
    broker: Broker, tmp_path: Path
) -> None:
    """C3.2: validity is capped (90 days by default) whoever asks; 825 days is refused."""
    acme = broker.onboard("acme")
    assert _renew(broker, acme, tmp_path, 1, days=825).status_code == 422
    too_long = _renew(broker, acme, tmp_path, 1, days=120)
    assert too_long.status_code == 400, too_long.text
    assert "valid for 1 to 90 days, not 120" in too_long.json()["detail"]
    made = _renew(broker, acme, tmp_path, 1)
    assert made.status_code == 200, made.text
    cert = x509.load_pem_x509_certificate(made.json()["certificate_pem"].encode())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= timedelta(days=90, minutes=5)


def test_C3_2_renewal_retires_the_oldest_certificate_into_the_crl(
    broker: Broker, tmp_path: Path
) -> None:
    """C3.2: at most two certificates of a recipient are live (the new one and the one it
    replaces); each renewal beyond that revokes the oldest, which is then refused."""
    onboarded = broker.onboard("acme")  # ca/issued/acme.pem is rewritten by each issue: copy it
    (tmp_path / "acme-1.pem").write_bytes(onboarded.cert.read_bytes())
    (tmp_path / "acme-1.key").write_bytes(onboarded.key.read_bytes())
    for n in (2, 3, 4):
        assert _renew(broker, _party(tmp_path, n - 1), tmp_path, n).is_success
    with broker.rt.db.transaction() as session:
        rows = session.exec(
            select(IssuedCertificate).where(col(IssuedCertificate.name) == "acme")
        ).all()
        live = [row for row in rows if row.revoked_us is None]
        assert (len(rows), len(live)) == (4, 2)
        assert {row.revocation_reason for row in rows if row.revoked_us} == {"superseded"}
    crl = x509.load_pem_x509_crl((broker.rt.settings.ca_dir / "crl.pem").read_bytes())
    assert {format(entry.serial_number, "x") for entry in crl} == {
        row.serial for row in rows if row.revoked_us is not None
    }
    assert _healthz(broker, _party(tmp_path, 1)) in (0, 403)
    assert _healthz(broker, _party(tmp_path, 2)) in (0, 403)
    assert _healthz(broker, _party(tmp_path, 3)) == 200
    assert _healthz(broker, _party(tmp_path, 4)) == 200


def _party(tmp: Path, n: int) -> Party:
    return Party("acme", tmp / f"acme-{n}.pem", tmp / f"acme-{n}.key", None)  # type: ignore[arg-type]
