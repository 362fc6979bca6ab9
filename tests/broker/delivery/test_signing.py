"""RFC 9421 signatures on pushes and JWS on deletion requests (X.1332 C3.2, R3.4): what a
recipient checks verifies, and any change to the body, target, covered headers, key or age is
refused."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey

from broker.delivery.errors import BadSignature
from broker.delivery.signing import (
    DELETION_TYPE,
    public_jwk,
    public_key_of,
    sign_json,
    sign_push,
    verify_json,
    verify_push,
)

URL = "https://hooks.example:8443/hook?tenant=7"
BODY = b'{"rows": [1, 2, 3]}'


def _signed(key: Ed25519PrivateKey, at: dt.datetime | None = None) -> dict[str, str]:
    at = at or dt.datetime.now(dt.UTC)
    return sign_push(key, URL, BODY, "application/json", "dl_1", "dl_1.1", at,
                     {"X-Release-Id": "rl_1"})  # fmt: skip


def test_C3_2_a_push_verifies_with_the_published_key() -> None:
    key = Ed25519PrivateKey.generate()
    headers = _signed(key)
    assert headers["Content-Digest"].startswith("sha-256=:")
    params = verify_push(public_key_of(public_jwk(key)), "POST", URL, headers.items(), BODY)
    assert params["tag"] == "x1332-push" and params["nonce"] == "dl_1.1"
    assert "x-release-id" in headers["Signature-Input"]


@pytest.mark.parametrize(
    ("what", "method", "url", "body", "change"),
    [
        ("body", "POST", URL, b'{"rows": [1, 2, 4]}', {}),
        ("target", "POST", URL.replace("7", "8"), BODY, {}),
        ("method", "PUT", URL, BODY, {}),
        ("release header", "POST", URL, BODY, {"X-Release-Id": "rl_2"}),
        ("delivery header", "POST", URL, BODY, {"X-Delivery-Id": "dl_2"}),
        ("digest header", "POST", URL, BODY, {"Content-Digest": "sha-256=:AAAA:"}),
    ],
)
def test_C3_2_a_changed_push_is_refused(
    what: str, method: str, url: str, body: bytes, change: dict[str, str]
) -> None:
    key = Ed25519PrivateKey.generate()
    headers = _signed(key) | change
    with pytest.raises(BadSignature):
        verify_push(key.public_key(), method, url, headers.items(), body)


def test_C3_2_another_key_or_an_old_signature_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(BadSignature):
        verify_push(Ed25519PrivateKey.generate().public_key(), "POST", URL,
                    _signed(key).items(), BODY)  # fmt: skip
    old = _signed(key, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    with pytest.raises(BadSignature):
        verify_push(key.public_key(), "POST", URL, old.items(), BODY)
    with pytest.raises(BadSignature):  # no signature at all
        verify_push(key.public_key(), "POST", URL, [("Content-Type", "application/json")], BODY)


def test_R3_4_deletion_request_jws_verifies_and_names_its_type() -> None:
    key = Ed25519PrivateKey.generate()
    token = sign_json(key, {"deletion_id": "del_1", "release_ids": ["rl_1"]}, DELETION_TYPE)
    verifier = OKPKey.import_key(public_jwk(key))
    assert verify_json(token, verifier, DELETION_TYPE)["deletion_id"] == "del_1"
    with pytest.raises(BadSignature):
        verify_json(token, verifier, "something-else+jws")
    with pytest.raises(BadSignature):
        other = OKPKey.import_key(public_jwk(Ed25519PrivateKey.generate()))
        verify_json(token, other, DELETION_TYPE)
    head, payload, sig = token.split(".")
    with pytest.raises(BadSignature):
        verify_json(f"{head}.{payload[:-2]}AA.{sig}", verifier, DELETION_TYPE)
