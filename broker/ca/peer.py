"""Who a client certificate says its holder is: the name, role, serial and fingerprint the TLS
layer and the authorization server check callers against."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509

from broker.ca.authority import common_name, fingerprint, role_of


@dataclass(frozen=True)
class Peer:
    """The authenticated caller: who the client certificate says it is."""

    name: str
    role: str | None
    serial: str
    fingerprint: str


@lru_cache(maxsize=4096)
def peer_from_pem(pem: str) -> Peer:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return Peer(
        common_name(cert), role_of(cert), format(cert.serial_number, "x"), fingerprint(cert)
    )
