"""Access tokens: short-lived JWTs signed by the broker's token key, bound to a certificate.

The key is Ed25519 in ``keys/oauth-token.key`` (0600, created on first use like the consent
receipt key; the public half beside it as ``oauth-token.pub``). A token carries ``iss``,
``sub`` (the recipient), ``aud``, ``iat``, ``exp``, ``jti``, ``scope`` and
``cnf: {"x5t#S256": ...}``, the base64url SHA-256 of the DER client certificate it was issued
to (RFC 8705 §3.1); a resource call must come over a connection with that same certificate.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from broker.keys.files import load_ed25519_key
from broker.kit.clock import Clock
from broker.kit.ids import new_id
from broker.oauth.errors import InvalidToken
from broker.oauth.settings import OAuthSettings
from broker.settings import Settings

ALG = "Ed25519"
"""RFC 9864's fully specified name for EdDSA over Ed25519."""


def thumbprint(fingerprint_hex: str) -> str:
    """``x5t#S256`` from the hex SHA-256 of a DER certificate (``Peer.fingerprint``)."""
    return base64.urlsafe_b64encode(bytes.fromhex(fingerprint_hex)).rstrip(b"=").decode()


def token_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "oauth-token.key"


def load_token_key(settings: Settings) -> OKPKey:
    """The token signing key, created (0600) on first use; a racing process's key wins."""
    path = token_key_path(settings)
    key = load_ed25519_key(settings, path, path.with_suffix(".pub"), "OAuth token key")
    return OKPKey.import_key(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass(frozen=True)
class AccessToken:
    recipient_id: str
    scopes: frozenset[str]
    x5t_s256: str
    jti: str
    expires_at: int
    issued_at: int
    """``iat``: a token issued before its recipient's last suspension is refused."""


class TokenCodec:
    """Signs and verifies access tokens with one key, one issuer and one audience."""

    def __init__(self, key: OKPKey, settings: OAuthSettings, clock: Clock) -> None:
        self._key, self._settings, self._clock = key, settings, clock
        self.kid = key.thumbprint()

    def issue(self, recipient_id: str, scopes: list[str], x5t_s256: str) -> dict[str, Any]:
        """The token response (RFC 6749 §5.1) for a new bound token."""
        now = int(self._clock.now().timestamp())
        ttl = self._settings.token_ttl_s
        claims = {
            "iss": self._settings.issuer,
            "sub": recipient_id,
            "client_id": recipient_id,
            "aud": self._settings.audience,
            "iat": now,
            "exp": now + ttl,
            "jti": new_id("at"),
            "scope": " ".join(scopes),
            "cnf": {"x5t#S256": x5t_s256},
        }
        header = {"alg": ALG, "typ": "at+jwt", "kid": self.kid}
        token = jwt.encode(header, claims, self._key, algorithms=[ALG])
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": claims["scope"],
        }

    def verify(self, token: str) -> AccessToken:
        """Signature, type, issuer, audience and expiry; the binding is the caller's to check."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALG])
        except (JoseError, ValueError) as exc:
            raise InvalidToken(f"the access token is not one of this broker's: {exc}") from None
        if decoded.header.get("typ") != "at+jwt":
            raise InvalidToken("not an access token (typ must be at+jwt)")
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock.now().timestamp()),
            iss={"essential": True, "value": self._settings.issuer},
            aud={"essential": True, "value": self._settings.audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidToken(f"the access token is not valid here: {exc.description}") from None
        cnf = claims.get("cnf")
        bound = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if not isinstance(bound, str) or not isinstance(claims.get("scope", ""), str):
            raise InvalidToken("the access token is not bound to a certificate")
        scopes = frozenset(str(claims.get("scope", "")).split())
        return AccessToken(
            str(claims["sub"]), scopes, bound, str(claims["jti"]), int(claims["exp"]),
            int(claims["iat"]),
        )  # fmt: skip
