"""A recipient's webhook endpoint, for recipients to start from and for the demo and tests.

``WebhookReceiver.app()`` is a FastAPI app with one route, ``POST /hook``. It accepts a push
only when the RFC 9421 signature verifies with the broker's published key (its JWKS), covers
the body's digest and is fresh; a delivery id seen before is answered 200 again without being
stored twice (the broker delivers at least once). Data pushes are kept by release id; a
deletion request is verified (the broker's JWS) and queued for ``acknowledge``, which deletes
what those releases delivered and returns the signed acknowledgement to post to the broker.
Each accepted push is answered with a signed receipt over its delivery id and body digest.

Serve it over TLS that requires the broker's client certificate (``serve_webhook``): the
recipient trusts the broker's CA for client certificates, the broker trusts the recipient's
server certificate through ``BROKER_PUSH_CA_FILE``. ``webhook_identity`` makes a private CA and
a server certificate for a loopback webhook, for trying this on one machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from broker.api.server import serving
from broker.delivery.deletion import ACK_TYPE
from broker.delivery.errors import BadSignature
from broker.delivery.outbox import RECEIPT_TYPE
from broker.delivery.signing import (
    DELETION_TYPE,
    DELIVERY_HEADER,
    RELEASE_HEADER,
    okp_key,
    public_key_of,
    verify_json,
    verify_push,
)
from broker.keys.files import write_secret_file

RecipientKey = ECKey | OKPKey


def _alg(key: RecipientKey) -> str:
    return "ES256" if isinstance(key, ECKey) else "Ed25519"


def sign_as_recipient(key: RecipientKey, payload: dict[str, Any], typ: str) -> str:
    header = {"alg": _alg(key), "typ": typ}
    if key.kid:
        header["kid"] = key.kid
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return jws.serialize_compact(header, body, key, algorithms=[_alg(key)])


@dataclass
class Pushed:
    delivery_id: str
    release_id: str | None
    media_type: str
    body: bytes


@dataclass
class WebhookReceiver:
    recipient: str
    broker_key: Ed25519PublicKey
    signing_key: RecipientKey
    """The recipient's private key whose public half it registered with the broker."""
    fail_first: int = 0
    """Answer the first N pushes 503 (to watch the broker retry)."""
    pushed: dict[str, Pushed] = field(default_factory=dict)
    """Accepted pushes by delivery id."""
    held: dict[str, bytes] = field(default_factory=dict)
    """Data held, by release id (what a deletion deletes)."""
    deletion_requests: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    answered_503: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_jwks(cls, recipient: str, jwks: dict[str, Any], signing_key: RecipientKey,
                 fail_first: int = 0) -> WebhookReceiver:  # fmt: skip
        keys = jwks.get("keys") or []
        if len(keys) != 1:
            raise BadSignature("the broker's JWKS should hold exactly one delivery key")
        return cls(recipient, public_key_of(keys[0]), signing_key, fail_first)

    def app(self) -> FastAPI:
        app = FastAPI(title=f"{self.recipient} webhook", openapi_url=None)

        @app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
            try:
                verify_push(self.broker_key, "POST", str(request.url), headers, body)
            except BadSignature as exc:
                with self._lock:
                    self.rejected.append(exc.message)
                return JSONResponse({"error": exc.message}, status_code=401)
            return self._accept(request, body)

        return app

    def _accept(self, request: Request, body: bytes) -> JSONResponse:
        delivery_id = request.headers.get(DELIVERY_HEADER, "")
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                self.answered_503 += 1
                return JSONResponse(
                    {"error": "busy"}, status_code=503, headers={"Retry-After": "0"}
                )
            if delivery_id not in self.pushed:
                media_type = request.headers.get("content-type", "")
                release_id = request.headers.get(RELEASE_HEADER)
                self.pushed[delivery_id] = Pushed(delivery_id, release_id, media_type, body)
                if release_id:
                    self.held[release_id] = body
                elif media_type == "application/json":
                    message = json.loads(body)
                    if message.get("type") == "deletion_request":
                        claims = verify_json(
                            message["deletion_request"], okp_key(self.broker_key),
                            DELETION_TYPE,
                        )  # fmt: skip
                        self.deletion_requests.append(claims)
        receipt = sign_as_recipient(
            self.signing_key,
            {"delivery_id": delivery_id, "body_sha256": hashlib.sha256(body).hexdigest()},
            RECEIPT_TYPE,
        )
        return JSONResponse({"receipt": receipt})

    def acknowledge(self, request: dict[str, Any]) -> str:
        """Delete what the request's releases delivered; return the signed acknowledgement."""
        with self._lock:
            for release_id in request["release_ids"]:
                self.held.pop(release_id, None)
        payload = {
            "deletion_id": request["deletion_id"],
            "recipient": self.recipient,
            "release_ids": request["release_ids"],
            "deleted_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        return sign_as_recipient(self.signing_key, payload, ACK_TYPE)


def webhook_identity(out: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """(CA PEM, server certificate, server key) for a webhook at ``host``: a private CA made
    here, standing in for the public CA a recipient's real endpoint would use."""
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"webhook CA for {host}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(IPv4Address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = out / "webhook-ca.pem", out / "webhook.pem", out / "webhook.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret_file(key_path, pem)
    return ca_path, cert_path, key_path


def webhook_server_context(broker_ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.3 requiring a client certificate of the broker's CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=broker_ca)
    return ctx


def serve_webhook(receiver: WebhookReceiver, ctx: ssl.SSLContext) -> AbstractContextManager[int]:
    """Serve the receiver on a free loopback port in a thread; yields the port."""
    return serving(receiver.app(), ctx)
