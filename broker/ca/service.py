"""CA operations the CLI, the server and the demo share (one place that opens the CA)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from broker.ca.authority import CertificateAuthority, Issued
from broker.ca.models import IssuedCertificate
from broker.runtime import Runtime

SERVER_NAME = "broker-server"


def open_ca(rt: Runtime) -> CertificateAuthority:
    return CertificateAuthority(rt.settings, rt.clock)


def server_identity(rt: Runtime, ca: CertificateAuthority, actor: str) -> tuple[Path, Path]:
    """The server's certificate and key, issued (role broker) on first use."""
    issued = ca.dir / "issued"
    cert, key = issued / f"{SERVER_NAME}.pem", issued / f"{SERVER_NAME}.key"
    if not (cert.exists() and key.exists()):
        with rt.db.transaction() as session:
            made: Issued = ca.issue(session, rt.audit, role="broker", name=SERVER_NAME, actor=actor)
        assert made.key_path is not None
        cert, key = made.cert_path, made.key_path
    return cert, key


def recorded_fingerprints(rt: Runtime) -> Callable[[str], str | None]:
    """Serial → the fingerprint the CA recorded when it issued that certificate, or None: the
    register the TLS layer checks peers against (``RevocationCheck``)."""

    def lookup(serial: str) -> str | None:
        with rt.db.transaction() as session:
            row = session.get(IssuedCertificate, serial)
            return None if row is None else row.fingerprint_sha256

    return lookup
