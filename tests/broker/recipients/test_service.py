"""The recipients registry on SQLite and PostgreSQL (C3.2, R3.3): registration checks, the CA
role by kind, suspension and revocation, every change audited."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey, OctKey

from broker.ca.authority import CertificateAuthority, role_of
from broker.errors import NotFound
from broker.kit.clock import FixedClock
from broker.recipients.egress import Egress
from broker.recipients.errors import InvalidRecipient, RecipientExists
from broker.recipients.models import Kind, Status
from broker.recipients.service import Recipients, Registration, check_webhook, purposes_of
from broker.storage.db import Database
from tests.broker.fakes import RecordingAuditSink, settings_for

CLOCK = FixedClock(datetime(2026, 11, 25, 12, tzinfo=UTC))


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(settings_for(tmp_path / "var"), CLOCK)


def _csr(name: str = "whatever") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_C3_2_register_and_certify_gives_the_role_of_the_kind(
    database: Database, ca: CertificateAuthority
) -> None:
    audit = RecordingAuditSink()
    service = Recipients(audit, CLOCK)
    with database.transaction() as session:
        service.register(
            session,
            Registration("acme", "Acme", Kind.researcher, ["energy_efficiency_research"]),
            "t",
        )
        service.register(session, Registration("grid", "Grid", Kind.ems, ["grid_operations"]), "t")
        acme = service.issue_certificate(session, ca, "acme", _csr("ignored-cn"), "t")
        grid = service.issue_certificate(session, ca, "grid", _csr(), "t")
    assert (acme.role, grid.role) == ("third-party", "ems")
    cert = x509.load_pem_x509_certificate(acme.cert_path.read_bytes())
    assert role_of(cert) == "third-party"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "acme"
    with database.transaction() as session:
        assert [r.recipient_id for r in service.all(session)] == ["acme", "grid"]
        assert purposes_of(service.get(session, "acme")) == ["energy_efficiency_research"]
    assert audit.types().count("recipient.registered") == 2
    assert "ca.certificate_issued" in audit.types()


@pytest.mark.parametrize(
    "reg",
    [
        Registration("bad name", "x", Kind.supplier),
        Registration("acme", " ", Kind.supplier),
        Registration("acme", "Acme", Kind.supplier, ["Not A Purpose"]),
        Registration("acme", "Acme", Kind.supplier, webhook_url="http://acme.example/hook"),
        Registration("acme", "Acme", Kind.supplier, webhook_url="https:///nohost"),
    ],
)
def test_bad_registrations_are_refused(database: Database, reg: Registration) -> None:
    with database.transaction() as session, pytest.raises(InvalidRecipient):
        Recipients(RecordingAuditSink(), CLOCK).register(session, reg, "t")


def test_a_recipient_is_registered_once(database: Database) -> None:
    service = Recipients(RecordingAuditSink(), CLOCK)
    reg = Registration("acme", "Acme", Kind.third_party)
    with database.transaction() as session:
        service.register(session, reg, "t")
    with database.transaction() as session, pytest.raises(RecipientExists):
        service.register(session, reg, "t")


def test_keys_must_be_public_asymmetric_jwks(database: Database) -> None:
    service = Recipients(RecordingAuditSink(), CLOCK)
    key = ECKey.generate_key("P-256")
    with database.transaction() as session:
        service.register(session, Registration("acme", "Acme", Kind.third_party), "t")
        row = service.add_key(session, "acme", key.as_dict(private=False), "t")
        assert row.kid == key.thumbprint()
        for bad in (key.as_dict(private=True), OctKey.generate_key(256).as_dict(), {"kty": "EC"}):
            with pytest.raises(InvalidRecipient):
                service.add_key(session, "acme", bad, "t")


def test_R3_3_suspended_and_revoked_recipients_get_no_certificate(
    database: Database, ca: CertificateAuthority
) -> None:
    audit = RecordingAuditSink()
    service = Recipients(audit, CLOCK)
    with database.transaction() as session:
        service.register(session, Registration("acme", "Acme", Kind.third_party), "t")
        service.issue_certificate(session, ca, "acme", _csr(), "t")
        assert service.suspend(session, "acme", "t", "late audit").status == Status.suspended
        with pytest.raises(InvalidRecipient):
            service.issue_certificate(session, ca, "acme", _csr(), "t")
        assert service.reinstate(session, "acme", "t", "audit done").status == Status.active
        assert service.revoke(session, ca, "acme", "t", "contract ended").status == Status.revoked
        assert [c.name for c in ca.revoked(session)] == ["acme"]
        with pytest.raises(InvalidRecipient):
            service.reinstate(session, "acme", "t", "no")
    assert {"recipient.suspended", "recipient.reinstated", "recipient.revoked"} <= set(
        audit.types()
    )
    assert "ca.certificate_revoked" in audit.types()


def test_unknown_recipient_is_not_found(database: Database) -> None:
    with database.transaction() as session, pytest.raises(NotFound):
        Recipients(RecordingAuditSink(), CLOCK).suspend(session, "ghost", "t", "x")


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example/x",
        "https:///no-host",
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
    ],
)
def test_T7_webhook_urls_that_are_not_https_or_reach_link_local_are_refused(url: str) -> None:
    with pytest.raises(InvalidRecipient):
        check_webhook(url)


def test_R3_1_loopback_and_private_webhooks_need_the_setting_and_an_allowed_port() -> None:
    """Production default: public hosts only; with the operator's setting, loopback and
    private addresses on the listed ports (``broker.recipients.egress``)."""
    private = Egress(allow_private=True, private_ports=frozenset({9443, 443}))
    for url in ("https://127.0.0.1:9443/h", "https://10.0.0.5/h"):
        with pytest.raises(InvalidRecipient, match="BROKER_WEBHOOK_ALLOW_PRIVATE is off"):
            check_webhook(url)
        assert check_webhook(url, private) == url
    with pytest.raises(InvalidRecipient, match="port 8443 is not in"):
        check_webhook("https://10.0.0.5:8443/h", private)
    assert check_webhook("https://hooks.example/h") == "https://hooks.example/h"
