"""The HTTPS server over real TLS on loopback (C2.1, C3.2, C4.2): only holders of a valid,
unrevoked certificate of the broker's CA reach /healthz, over TLS 1.3 only."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.ca.authority import ROLE_URI, CertificateAuthority, Issued
from broker.kit.clock import FixedClock, SystemClock
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from tests.broker.fakes import settings_for

# With TLS 1.3 the server checks the client certificate after the client's side of the handshake
# is done, so a refusal shows up as a failed connect or as a connection closed without an answer.
REFUSED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


def _issue(
    rt: Runtime,
    name: str,
    role: str = "third-party",
    ca: CertificateAuthority | None = None,
    days: int = 30,
) -> Issued:
    ca = ca or CertificateAuthority(rt.settings, rt.clock)
    with rt.db.transaction() as session:
        return ca.issue(session, rt.audit, role=role, name=name, actor="test", days=days)


def _revoke(rt: Runtime, name: str) -> None:
    with rt.db.transaction() as session:
        CertificateAuthority(rt.settings, rt.clock).revoke(
            session, rt.audit, actor="test", name=name
        )


def _get(
    rt: Runtime, port: int, who: Issued | None, ctx: ssl.SSLContext | None = None
) -> httpx.Response:
    ca_pem = rt.settings.ca_dir / "ca.pem"
    if ctx is None:
        ctx = client_context(ca_pem, who.cert_path, who.key_path) if who else client_context(ca_pem)
    with httpx.Client(verify=ctx, timeout=5) as client:
        return client.get(f"https://127.0.0.1:{port}/healthz")


def test_C3_2_client_with_a_ca_certificate_reaches_healthz(rt: Runtime) -> None:
    acme = _issue(rt, "acme")
    with running(build(rt, "test")) as port:
        response = _get(rt, port, acme)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "peer": "acme", "role": "third-party"}


def test_C2_1_client_without_a_certificate_cannot_connect(rt: Runtime) -> None:
    with running(build(rt, "test")) as port, pytest.raises(REFUSED):
        _get(rt, port, None)


def test_C3_2_certificate_of_another_ca_is_refused(rt: Runtime, tmp_path: Path) -> None:
    other_ca = CertificateAuthority.create(settings_for(tmp_path / "other"), SystemClock())
    stranger = _issue(rt, "stranger", ca=other_ca)
    with running(build(rt, "test")) as port, pytest.raises(REFUSED):
        _get(rt, port, stranger)


def test_C3_2_certificate_revoked_before_start_fails_the_handshake(rt: Runtime) -> None:
    _issue(rt, "acme")
    gone = _issue(rt, "gone")
    _revoke(rt, "gone")
    with running(build(rt, "test")) as port:
        assert _get(rt, port, _issue(rt, "acme-2")).status_code == 200
        with pytest.raises(REFUSED):
            _get(rt, port, gone)


def test_C3_2_certificate_revoked_while_running_is_refused_at_once(rt: Runtime) -> None:
    ems = _issue(rt, "grid-ems", role="ems")
    with running(build(rt, "test", poll_s=3600)) as port:  # no background refresh: per request
        assert _get(rt, port, ems).status_code == 200
        _revoke(rt, "grid-ems")
        response = _get(rt, port, ems)
    assert response.status_code == 403
    assert response.json()["error"] == "Forbidden"
    assert "revoked" in response.json()["detail"]


def test_C3_2_revocation_reaches_the_handshake_of_a_running_server(rt: Runtime) -> None:
    ems = _issue(rt, "grid-ems", role="ems")
    with running(build(rt, "test", poll_s=0.05)) as port:
        assert _get(rt, port, ems).status_code == 200
        _revoke(rt, "grid-ems")  # as `broker ca revoke` would, from outside the server
        assert _refused_at_the_handshake_soon(rt, port, ems)


def _refused_at_the_handshake_soon(rt: Runtime, port: int, issued: Issued) -> bool:
    """Poll until the running server refuses ``issued`` at the handshake (its CRL keeper polls
    ``crl.pem``; until then the request check answers 403): True, or False after 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _get(rt, port, issued)
        except REFUSED:
            return True
        time.sleep(0.05)  # the poll's pace; the loop checks the condition
    return False


def test_resigned_crl_replaces_the_one_the_server_started_with(rt: Runtime) -> None:
    acme = _issue(rt, "acme")
    served = build(rt, "test", poll_s=0.05)
    old = (rt.settings.ca_dir / "crl.pem").read_bytes()
    with running(served) as port:
        with rt.db.transaction() as session:
            CertificateAuthority(rt.settings, rt.clock).refresh_crl(session)
        time.sleep(0.3)
        assert (rt.settings.ca_dir / "crl.pem").read_bytes() != old
        assert _get(rt, port, acme).status_code == 200


def test_C2_1_tls_1_2_is_refused(rt: Runtime) -> None:
    acme = _issue(rt, "acme")
    ctx = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(acme.cert_path, acme.key_path)
    with running(build(rt, "test")) as port, pytest.raises(REFUSED):
        _get(rt, port, acme, ctx)


def test_C3_2_expired_certificate_is_refused(rt: Runtime) -> None:
    past = FixedClock(rt.clock.now() - timedelta(days=10))
    expired = _issue(rt, "expired", ca=CertificateAuthority(rt.settings, past), days=1)
    with running(build(rt, "test")) as port, pytest.raises(REFUSED):
        _get(rt, port, expired)


def test_server_certificate_is_issued_once_with_the_broker_role(rt: Runtime) -> None:
    build(rt, "test")
    build(rt, "test")
    with rt.db.transaction() as session:
        names = [c.name for c in CertificateAuthority(rt.settings, rt.clock).certificates(session)]
    assert names == ["broker-server"]


def _forge(rt: Runtime, tmp_path: Path, name: str, serial: int | None = None) -> Issued:
    """A certificate signed with the CA's key directly, never recorded in ``ca_certificate``
    (as a stolen CA key, or a bug that signs without recording, would make one)."""
    ca_dir = rt.settings.ca_dir
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "third-party"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    usage = x509.KeyUsage(True, False, False, False, True, False, False, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ROLE_URI + "third-party")]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    stem = tmp_path / f"forged-{cert.serial_number:x}"
    cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(format(cert.serial_number, "x"), name, "third-party", cert_path, key_path)


def test_C3_2_a_certificate_the_ca_never_recorded_is_refused(rt: Runtime, tmp_path: Path) -> None:
    """C3.2, C1.2: only certificates the CA issued and recorded are accepted. One signed with
    the CA key but absent from ``ca_certificate`` (new serial), or posing under a recorded
    serial with another key, passes the handshake's chain check and is refused per request."""
    acme = _issue(rt, "acme")
    forged = _forge(rt, tmp_path, "acme")
    twin = _forge(rt, tmp_path, "acme", serial=int(acme.serial, 16))
    with running(build(rt, "test", poll_s=3600)) as port:
        assert _get(rt, port, acme).status_code == 200
        for who in (forged, twin):
            response = _get(rt, port, who)
            assert response.status_code == 403, who.serial
            assert response.json()["error"] == "Forbidden"
            assert "was not issued by this broker's CA" in response.json()["detail"]
        assert _get(rt, port, acme).status_code == 200
