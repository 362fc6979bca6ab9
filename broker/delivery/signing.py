"""Signatures on what the broker sends recipients: HTTP Message Signatures (RFC 9421) on every
webhook request, and compact JWS on deletion requests.

One Ed25519 key, ``keys/delivery-signing.key`` (0600, made on first use), signs both; its
public key is published as a JWK at ``/.well-known/jwks.json`` with ``kid`` its RFC 7638
thumbprint, so a recipient fetches it once over mutual TLS and verifies every push offline.

A webhook request is signed over ``@method``, ``@target-uri``, ``content-type``,
``content-digest`` (RFC 9530, SHA-256 of the body), the delivery's id header and, on data
pushes, the release's id header, with ``created``, ``keyid``, ``alg="ed25519"``, tag
``x1332-push`` and a nonce (the delivery id and attempt), using ``http-message-signatures``
(pyauth). ``verify_push`` is what a recipient runs: the signature must verify, cover those
components, be younger than ``max_age`` and match the body; the reference receiver
(``demo.receiver``) and the tests use it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, OKPKey

from broker.delivery.errors import BadSignature
from broker.keys.files import load_ed25519_key
from broker.kit.canonical import canonical_json
from broker.settings import Settings

TAG = "x1332-push"
LABEL = "broker"
DELIVERY_HEADER = "X-Delivery-Id"
RELEASE_HEADER = "X-Release-Id"
COVERED = ("@method", "@target-uri", "content-type", "content-digest", "x-delivery-id")
DELETION_TYPE = "x1332-deletion-request+jws"


def delivery_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "delivery-signing.key"


def load_delivery_key(settings: Settings) -> Ed25519PrivateKey:
    path = delivery_key_path(settings)
    return load_ed25519_key(settings, path, path.with_suffix(".pub"), "delivery signing key")


def okp_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> OKPKey:
    """The joserfc form of an Ed25519 key."""
    if isinstance(key, Ed25519PrivateKey):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    else:
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return OKPKey.import_key(pem)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of the public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return okp_key(public).thumbprint()


def public_jwk(key: Ed25519PrivateKey) -> dict[str, Any]:
    jwk = okp_key(key.public_key()).as_dict(private=False)
    return jwk | {"kid": key_id(key), "use": "sig", "alg": "Ed25519"}


def public_key_of(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """The Ed25519 key of a published JWK (what a recipient does with the JWKS)."""
    try:
        key = OKPKey.import_key(dict(jwk)).get_op_key("verify")
    except (JoseError, ValueError, TypeError) as exc:
        raise BadSignature(f"not an Ed25519 public JWK: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BadSignature("not an Ed25519 public JWK")
    return key


class _Headers:
    """A case-insensitive header map that keeps its insertion order (the library's view)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            self[name] = value

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._items.values())

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def as_dict(self) -> dict[str, str]:
        return dict(self._items.values())


@dataclass
class _Message:
    method: str
    url: str
    headers: _Headers


def sign_push(
    key: Ed25519PrivateKey,
    url: str,
    body: bytes,
    content_type: str,
    delivery_id: str,
    nonce: str,
    now: dt.datetime,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers of a signed ``POST url``: Content-Type, Content-Digest, the delivery id,
    the ``extra`` headers (signed too), Signature-Input and Signature."""
    kid = key_id(key)
    extra = dict(extra or {})
    headers = _Headers(
        [("Content-Type", content_type), (DELIVERY_HEADER, delivery_id), *extra.items()]
    )
    message = _Message("POST", url, headers)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={kid: key}),
    )
    signer.sign(
        message,
        key_id=kid,
        created=now,
        nonce=nonce,
        label=LABEL,
        tag=TAG,
        covered_component_ids=(*COVERED, *(name.lower() for name in extra)),
        body=body,
    )
    return headers.as_dict()


def verify_push(
    public: Ed25519PublicKey,
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    max_age: dt.timedelta = dt.timedelta(minutes=5),
) -> dict[str, Any]:
    """Verify a push as its recipient: signature by ``public``, covering ``COVERED``, not older
    than ``max_age``, Content-Digest matching ``body``. Returns the signed parameters (keyid,
    created, nonce, tag); raises ``BadSignature``."""
    kid = key_id(public)
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={kid: public}, private_keys={}),
    )
    message = _Message(method, url, _Headers(headers))
    try:
        results = verifier.verify(
            message, max_age=max_age, expect_tag=TAG, require_components=COVERED, body=body
        )
    except HTTPMessageSignaturesException as exc:
        raise BadSignature(f"the push's signature does not verify: {exc}") from exc
    if len(results) != 1 or results[0].body is None:
        raise BadSignature("the push carries no single signature over its body")
    return dict(results[0].parameters)


def sign_json(key: Ed25519PrivateKey, payload: Mapping[str, Any], typ: str) -> str:
    """A compact JWS (alg Ed25519, RFC 9864) over the RFC 8785 canonical form of ``payload``."""
    header = {"alg": "Ed25519", "kid": key_id(key), "typ": typ}
    return jws.serialize_compact(
        header, canonical_json(dict(payload)), okp_key(key), algorithms=["Ed25519"]
    )


def verify_json(token: str, key: OKPKey | Any, typ: str | None = None) -> dict[str, Any]:
    """The payload of a compact JWS signed by ``key`` (a joserfc key); ``BadSignature`` if not.
    Accepts Ed25519 and ES256 (the algorithms recipients register keys for)."""
    try:
        obj = jws.deserialize_compact(token, key, algorithms=["Ed25519", "ES256"])
    except (JoseError, ValueError, TypeError) as exc:
        raise BadSignature(f"the signature does not verify: {exc}") from exc
    if typ is not None and obj.headers().get("typ") != typ:
        raise BadSignature(f"the JWS is not of type {typ}")
    try:
        payload = json.loads(obj.payload)
    except ValueError as exc:
        raise BadSignature("the JWS payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise BadSignature("the JWS payload is not a JSON object")
    return payload


def verify_json_by_any(token: str, jwks: Sequence[str], typ: str) -> dict[str, Any]:
    """The payload of ``token`` if one of ``jwks`` (public JWKs as JSON, a recipient's
    registered keys) signed it with ``typ``; ``BadSignature`` saying why not otherwise."""
    if not jwks:
        raise BadSignature("no key is registered to verify it with")
    problem = "no registered key verifies it"
    for text in jwks:
        try:
            key = JWKRegistry.import_key(json.loads(text))
        except (JoseError, ValueError):
            continue
        try:
            return verify_json(token, key, typ)
        except BadSignature as exc:
            problem = exc.message
    raise BadSignature(problem)
