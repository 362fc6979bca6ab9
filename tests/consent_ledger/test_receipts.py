"""Consent receipts (R3.4): a compact JWS, EdDSA over Ed25519, that the customer verifies with
the broker's public key; a changed payload, another key or another algorithm is refused."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.jwk import OctKey, OKPKey

from consent_ledger import (
    ConsentEvent,
    Give,
    LedgerState,
    ReceiptError,
    ReceiptSigner,
    Withdraw,
    load_public_key,
    verify_receipt,
)
from consent_ledger.receipts import _REGISTRY, receipt_claims
from tests.consent_ledger.factories import NOTICE, T0, append, request


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def given() -> ConsentEvent:
    (event,) = append(LedgerState(), [Give(request())])
    return event


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_R3_4_receipt_verifies_with_the_public_key_and_carries_the_event(
    signer: ReceiptSigner, given: ConsentEvent
) -> None:
    assert given.terms is not None
    claims = verify_receipt(signer.sign(given, given.terms), signer.public_key)
    assert claims == receipt_claims(given, given.terms)
    assert claims["event_hash"] == given.hash.hex()
    assert (claims["kind"], claims["seq"], claims["customer"]) == ("given", 1, "C-1")
    assert claims["purposes"] == ["personalised_service"]
    assert (claims["expires_at"], claims["notice_hash"]) == ("2026-12-24T12:00:00.000000Z", NOTICE)
    assert claims["iat"] == int(T0.timestamp())


def test_receipt_is_byte_identical_to_joserfc(signer: ReceiptSigner, given: ConsentEvent) -> None:
    """Our signing shortcut produces exactly the token joserfc builds (Ed25519 is
    deterministic), and joserfc verifies it with its own, unrestricted registry too."""
    assert given.terms is not None
    token = signer.sign(given, given.terms)
    payload = _unb64(_segments(token)[1])
    private = OKPKey.import_key(signer._key)
    assert jws.serialize_compact(signer.header, payload, private, registry=_REGISTRY) == token
    with pytest.warns(Warning, match="EdDSA is deprecated"):
        obj = jws.deserialize_compact(token, OKPKey.import_key(signer.public_key), ["EdDSA"])
    assert obj.headers() == {"alg": "EdDSA", "kid": signer.kid, "typ": "JWT"}


def test_a_changed_payload_is_refused(signer: ReceiptSigner, given: ConsentEvent) -> None:
    assert given.terms is not None
    header, payload, signature = _segments(signer.sign(given, given.terms))
    claims = json.loads(_unb64(payload))
    claims["purposes"] = ["marketing"]
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    with pytest.raises(ReceiptError, match="signature does not verify"):
        verify_receipt(forged, signer.public_key)
    flipped = ".".join([header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    with pytest.raises(ReceiptError, match="signature does not verify"):
        verify_receipt(flipped, signer.public_key)


def test_a_receipt_under_another_key_is_refused(signer: ReceiptSigner, given: ConsentEvent) -> None:
    assert given.terms is not None
    token = ReceiptSigner(Ed25519PrivateKey.generate()).sign(given, given.terms)
    with pytest.raises(ReceiptError, match="signature does not verify"):
        verify_receipt(token, signer.public_key)


def test_only_eddsa_is_accepted(signer: ReceiptSigner, given: ConsentEvent) -> None:
    assert given.terms is not None
    claims = json.dumps(receipt_claims(given, given.terms))
    secret = OctKey.import_key(b"a-shared-secret-of-32-bytes!!!!!")
    hs256 = jws.serialize_compact({"alg": "HS256"}, claims, secret, algorithms=["HS256"])
    with pytest.raises(ReceiptError, match="alg 'HS256'; only EdDSA is accepted"):
        verify_receipt(hs256, signer.public_key)
    unsigned = _b64(b'{"alg":"none"}') + "." + _b64(claims.encode()) + "."
    with pytest.raises(ReceiptError, match="alg 'none'; only EdDSA is accepted"):
        verify_receipt(unsigned, signer.public_key)
    ed448 = OKPKey.import_key(Ed448PrivateKey.generate())
    with pytest.warns(Warning, match="EdDSA is deprecated"):
        other_curve = jws.serialize_compact({"alg": "EdDSA"}, claims, ed448, ["EdDSA"])
    with pytest.raises(ReceiptError, match="signature does not verify"):
        verify_receipt(other_curve, signer.public_key)
    with pytest.raises(ReceiptError, match="not a compact JWS"):
        verify_receipt("not.a-token", signer.public_key)


def test_public_key_exports_as_jwk_and_pem(signer: ReceiptSigner, given: ConsentEvent) -> None:
    assert given.terms is not None
    token = signer.sign(given, given.terms)
    jwk = signer.public_jwk()
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["kid"]) == (
        "OKP",
        "Ed25519",
        "EdDSA",
        signer.kid,
    )
    assert "d" not in jwk
    assert signer.kid == OKPKey.import_key(signer.public_key).thumbprint()  # RFC 7638
    for exported in (json.dumps(jwk).encode(), signer.public_pem()):
        assert verify_receipt(token, load_public_key(exported))["consent_id"] == given.consent_id
    with pytest.raises(ReceiptError, match="not an Ed25519 public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nbroken\n-----END PUBLIC KEY-----\n")
    ed448 = OKPKey.import_key(Ed448PrivateKey.generate().public_key()).as_dict()
    with pytest.raises(ReceiptError, match="must be Ed25519, not Ed448PublicKey"):
        load_public_key(json.dumps(ed448).encode())


def test_R3_4_a_withdrawal_receipt_names_the_terms_it_ends(
    signer: ReceiptSigner, given: ConsentEvent
) -> None:
    assert given.terms is not None
    state = LedgerState.from_events([given])
    (withdrawal,) = append(state, [Withdraw(given.consent_id)], at=T0 + timedelta(hours=1))
    claims = verify_receipt(signer.sign(withdrawal, given.terms), signer.public_key)
    assert (claims["kind"], claims["seq"], claims["consent_id"]) == (
        "withdrawn",
        2,
        given.consent_id,
    )
