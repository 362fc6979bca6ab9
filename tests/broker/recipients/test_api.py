"""``/v1/recipients`` over real mutual TLS (C3.2, R3.3): managed with a broker (operator)
certificate, a recipient reads only its own record, bodies refuse unknown fields."""

from __future__ import annotations

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.runtime.wiring import open_ca, server_identity
from tests.broker.oauth.conftest import Broker, Party

pytestmark = pytest.mark.timeout(60)


def _operator(broker: Broker) -> Party:
    with broker.rt.db.transaction() as session:
        made = open_ca(broker.rt).issue(
            session, broker.rt.audit, role="operator", name="ops", actor="test"
        )
    assert made.key_path is not None
    return Party("ops", made.cert_path, made.key_path, None)  # type: ignore[arg-type]


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "new")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_C3_2_operator_registers_certifies_and_revokes_over_the_api(broker: Broker) -> None:
    ops = _operator(broker)
    with broker.client(ops) as client:
        made = client.post(
            "/v1/recipients",
            json={
                "recipient_id": "newco",
                "display_name": "NewCo",
                "kind": "supplier",
                "purposes": ["billing"],
                "webhook_url": "https://newco.example/hook",
            },
        )
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "active"
        cert = client.post("/v1/recipients/newco/certificate", json={"csr_pem": _csr()})
        assert cert.status_code == 200 and cert.json()["role"] == "third-party"
        assert "BEGIN CERTIFICATE" in cert.json()["certificate_pem"]
        suspended = client.post("/v1/recipients/newco/suspend", json={"reason": "audit"})
        assert suspended.json()["status"] == "suspended"
        revoked = client.post("/v1/recipients/newco/revoke", json={"reason": "ended"})
        assert revoked.json()["status"] == "revoked"
        assert [r["recipient_id"] for r in client.get("/v1/recipients").json()] == ["newco"]


def test_R3_3_a_recipient_reads_only_its_own_record(broker: Broker) -> None:
    acme, other = broker.onboard("acme"), broker.onboard("other")
    with broker.client(acme) as client:
        assert client.get("/v1/recipients/acme").json()["recipient_id"] == "acme"
        assert client.get("/v1/recipients/other").status_code == 403
        assert client.get("/v1/recipients").status_code == 403
        assert client.post("/v1/recipients/other/suspend", json={"reason": "x"}).status_code == 403
        assert client.post("/v1/recipients/acme/revoke", json={"reason": "x"}).status_code == 403
    assert other.name == "other"


def test_C3_2_the_servers_own_certificate_manages_nothing(broker: Broker) -> None:
    """The push worker presents the server's ``broker`` certificate to webhooks; a webhook aimed
    back at the registry must not act with it (a confused deputy): only ``operator`` manages."""
    acme = broker.onboard("acme")
    cert, key = server_identity(broker.rt, open_ca(broker.rt), "test")
    server = Party("broker", cert, key, None)  # type: ignore[arg-type]
    with broker.client(server) as client:
        revoke = client.post("/v1/recipients/acme/revoke", json={"reason": "from a webhook"})
        listed = client.get("/v1/recipients")
    assert revoke.status_code == 403 and "needs a certificate of role operator" in revoke.text
    assert listed.status_code == 403
    with broker.client(acme) as client:
        assert client.get("/v1/recipients/acme").json()["status"] == "active"


def test_mass_assignment_is_refused(broker: Broker) -> None:
    ops = _operator(broker)
    with broker.client(ops) as client:
        response = client.post(
            "/v1/recipients",
            json={
                "recipient_id": "sneaky",
                "display_name": "S",
                "kind": "supplier",
                "status": "active",
                "created_us": 0,
            },
        )
    assert response.status_code == 422
    assert httpx.codes.is_client_error(response.status_code)
