"""A running broker on loopback with the OAuth routes, and recipients onboarded the real way:
registered, their CSRs certified by the CA, their keys registered."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import Depends
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.api.oauth import Caller, require_token
from broker.api.server import build, running
from broker.api.tls import client_context
from broker.ca.authority import CertificateAuthority
from broker.kit.clock import SystemClock
from broker.oauth.settings import OAuthSettings
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.runtime.wiring import open_ca
from tests.broker.fakes import settings_for

ISSUER = "https://broker.test"
TOKEN_URL = ISSUER + "/oauth/token"


@dataclass
class Party:
    name: str
    cert: Path
    key: Path
    jwk: ECKey

    def assertion(self, **override: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.name,
            "sub": self.name,
            "aud": TOKEN_URL,
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
        } | override
        return jwt.encode({"alg": "ES256", "kid": self.jwk.kid}, claims, self.jwk)


@dataclass
class Broker:
    rt: Runtime
    url: str
    ca_pem: Path
    tmp: Path

    def client(self, who: Party) -> httpx.Client:
        ctx = client_context(self.ca_pem, who.cert, who.key)
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def onboard(
        self,
        name: str,
        kind: Kind = Kind.third_party,
        purposes: tuple[str, ...] = ("personalised_service",),
    ) -> Party:
        service = Recipients(self.rt.audit, self.rt.clock)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        jwk = ECKey.generate_key("P-256", parameters={"kid": f"{name}-1"})
        with self.rt.db.transaction() as session:
            service.register(session, Registration(name, name.title(), kind, purposes), "test")
            issued = service.issue_certificate(session, open_ca(self.rt), name, csr, "test")
            service.add_key(session, name, jwk.as_dict(private=False), "test")
        key_path = self.tmp / f"{name}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Party(name, issued.cert_path, key_path, jwk)

    def token(
        self, who: Party, scope: str = "feeds:read", via: Party | None = None
    ) -> httpx.Response:
        with self.client(via or who) as client:
            return client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "client_id": who.name, "scope": scope},
            )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    rt = Runtime.open(settings)
    oauth = OAuthSettings(issuer=ISSUER, rate_per_s=0.5, burst=25)
    served = build(rt, "test", poll_s=3600, oauth=oauth)

    @served.app.get("/v1/test/feeds")
    def feeds(caller: Annotated[Caller, Depends(require_token("feeds:read"))]) -> dict[str, str]:
        return {"recipient": caller.recipient_id}

    @served.app.get("/v1/test/ems")
    def ems(caller: Annotated[Caller, Depends(require_token("ems:read"))]) -> dict[str, str]:
        return {"recipient": caller.recipient_id}

    with running(served) as port:
        yield Broker(rt, f"https://127.0.0.1:{port}", settings.ca_dir / "ca.pem", tmp_path)
    rt.close()
