"""The private CA (C1.2, C3.2, C4.2): roles in certificates, CSRs, revocation and the CRL."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.ca.authority import CAError, CertificateAuthority, role_of
from broker.errors import ConfigurationError, NotFound
from broker.kit.clock import FixedClock
from broker.settings import Mode
from broker.storage.db import Database
from tests.broker.fakes import RecordingAuditSink, settings_for

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(settings_for(tmp_path), FixedClock(NOW))


@pytest.fixture
def audit() -> RecordingAuditSink:
    return RecordingAuditSink()


def _csr(key: ec.EllipticCurvePrivateKey, name: str = "acme") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def test_C3_2_ca_key_is_private_and_init_refuses_to_overwrite(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    assert stat.S_IMODE((ca.dir / "ca.key").stat().st_mode) == 0o600
    with pytest.raises(CAError, match="already exists"):
        CertificateAuthority.create(settings_for(tmp_path), FixedClock(NOW))


@pytest.mark.parametrize(
    "role", ["mdms", "concentrator", "third-party", "ems", "broker", "regulator"]
)
def test_C1_2_role_travels_in_the_certificate(
    database: Database, ca: CertificateAuthority, audit: RecordingAuditSink, role: str
) -> None:
    with database.transaction() as session:
        made = ca.issue(session, audit, role=role, name=f"holder-{role}", actor="test")
    cert = x509.load_pem_x509_certificate(made.cert_path.read_bytes())
    assert role_of(cert) == role
    assert cert.issuer == ca.cert.subject
    assert made.key_path is not None and stat.S_IMODE(made.key_path.stat().st_mode) == 0o600
    assert audit.types() == ["ca.certificate_issued"]


def test_issue_from_a_csr_signs_the_requesters_key(
    database: Database, ca: CertificateAuthority, audit: RecordingAuditSink
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with database.transaction() as session:
        made = ca.issue(
            session, audit, role="third-party", name="acme", actor="t", csr_pem=_csr(key)
        )
    cert = x509.load_pem_x509_certificate(made.cert_path.read_bytes())
    assert made.key_path is None
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_forged_csr_is_refused(
    database: Database, ca: CertificateAuthority, audit: RecordingAuditSink
) -> None:
    good = x509.load_pem_x509_csr(_csr(ec.generate_private_key(ec.SECP256R1())))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with (
        pytest.raises(CAError, match="signature does not verify"),
        database.transaction() as session,
    ):
        ca.issue(session, audit, role="third-party", name="mallory", actor="t", csr_pem=forged)


@pytest.mark.parametrize(
    ("role", "name", "message"),
    [
        ("admin", "x", "unknown role"),
        ("ems", "../etc/passwd", "invalid name"),
        ("ems", "a b", "invalid name"),
    ],
)
def test_bad_requests_are_refused(
    database: Database,
    ca: CertificateAuthority,
    audit: RecordingAuditSink,
    role: str,
    name: str,
    message: str,
) -> None:
    with pytest.raises(CAError, match=message), database.transaction() as session:
        ca.issue(session, audit, role=role, name=name, actor="t")


def test_not_a_csr_is_refused(
    database: Database, ca: CertificateAuthority, audit: RecordingAuditSink
) -> None:
    with pytest.raises(CAError, match="not a PEM"), database.transaction() as session:
        ca.issue(session, audit, role="ems", name="x", actor="t", csr_pem=b"hello")


def test_C3_2_revocation_is_published_in_a_signed_crl(
    database: Database, ca: CertificateAuthority, audit: RecordingAuditSink
) -> None:
    with database.transaction() as session:
        made = ca.issue(session, audit, role="third-party", name="acme", actor="t")
        ca.issue(session, audit, role="third-party", name="other", actor="t")
        assert ca.revoke(session, audit, actor="t", name="acme", reason="key compromise") == [
            made.serial
        ]
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert [format(r.serial_number, "x") for r in crl] == [made.serial]
    assert audit.types()[-1] == "ca.certificate_revoked"
    with pytest.raises(NotFound), database.transaction() as session:
        ca.revoke(session, audit, actor="t", serial=made.serial)


def test_damaged_ca_key_is_a_clear_error(tmp_path: Path, ca: CertificateAuthority) -> None:
    (ca.dir / "ca.key").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigurationError, match="is damaged"):
        CertificateAuthority(settings_for(tmp_path), FixedClock(NOW))


def test_world_readable_ca_key_is_refused_outside_development(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    (ca.dir / "ca.key").chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        CertificateAuthority(settings_for(tmp_path), FixedClock(NOW))
    CertificateAuthority(settings_for(tmp_path, Mode.development), FixedClock(NOW))


def test_missing_ca_tells_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="broker ca init"):
        CertificateAuthority(settings_for(tmp_path / "none"), FixedClock(NOW))


def test_each_crl_is_newer_than_the_last(database: Database, ca: CertificateAuthority) -> None:
    first = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    with database.transaction() as session:
        ca.refresh_crl(session)
    second = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert second.last_update_utc > first.last_update_utc
    number = second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
