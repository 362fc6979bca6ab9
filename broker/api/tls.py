"""TLS for every link (C2.1, C3.2, C4.2): TLS 1.3 only, client certificates required and
checked against the private CA and its CRL at the handshake.

``RevocationCheck`` repeats the CRL check per request from the current ``crl.pem`` (reloaded
when the file changes) and feeds each new CRL to the TLS context, so a revocation takes effect on
a running server without a restart. With the CA's register (``issued``) it also refuses a
certificate the CA never recorded: the chain check proves only that the CA key signed it, and a
certificate signed outside ``CertificateAuthority.issue`` (a stolen key, a restored backup) is
in no CRL. A certificate is accepted when its serial is recorded with its own fingerprint.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from broker.ca.peer import Peer


def server_context(ca_pem: Path, crl_pem: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca_pem)
    ctx.load_verify_locations(cafile=crl_pem)
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    return ctx


def client_context(
    ca_pem: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context that trusts only the private CA, with a client certificate if given."""
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class RevocationCheck:
    """Serials revoked in the CA's current CRL, reloaded when ``crl.pem`` changes.

    With the server's TLS context it also hands each new CRL to OpenSSL, which prefers the most
    recent CRL of an issuer: revocations then bite at the handshake too, and a re-signed CRL
    replaces one that is about to pass its nextUpdate.
    """

    def __init__(
        self,
        crl_pem: Path,
        ctx: ssl.SSLContext | None = None,
        issued: Callable[[str], str | None] | None = None,
    ) -> None:
        self._path = crl_pem
        self._ctx = ctx
        self._issued = issued
        """Serial → the SHA-256 fingerprint the CA recorded for it, or None (never issued)."""
        self._recorded: dict[str, str] = {}  # records are never rewritten: cache the hits
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._revoked: frozenset[str] = frozenset()

    def refresh(self) -> None:
        stat = self._path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            pem = self._path.read_bytes()
            crl = x509.load_pem_x509_crl(pem)
            self._revoked = frozenset(format(entry.serial_number, "x") for entry in crl)
            if self._ctx is not None:
                # cadata takes certificates only; a CRL must come from a file
                self._ctx.load_verify_locations(cafile=self._path)
            self._stamp = stamp

    def is_revoked(self, serial: str) -> bool:
        self.refresh()
        return serial in self._revoked

    def refusal(self, peer: Peer) -> str | None:
        """Why ``peer``'s certificate is refused (revoked, or not recorded by the CA), or None.
        Without the CA's register every certificate is refused (fail closed)."""
        if self.is_revoked(peer.serial):
            return f"certificate {peer.serial} of {peer.name} is revoked"
        if not self._was_issued(peer):
            return (
                f"certificate {peer.serial} of {peer.name} was not issued by this broker's CA "
                "(no such certificate is recorded)"
            )
        return None

    def _was_issued(self, peer: Peer) -> bool:
        known = self._recorded.get(peer.serial)
        if known is None and self._issued is not None:
            known = self._issued(peer.serial)
            if known is not None:
                if len(self._recorded) >= 65_536:
                    self._recorded.clear()
                self._recorded[peer.serial] = known
        return known is not None and known == peer.fingerprint
