"""The upstream OpenID Connect provider, as the portal's sign-in uses it: its discovery
(cached), the code redeemed at its token endpoint with the PKCE verifier (authlib's client), and
the ID token verified with joserfc against its JWKS (refreshed at most every
``JWKS_REFRESH_S`` when a token names an unknown key): signature, ``iss``, ``aud`` (``azp``
when there are several audiences), ``exp`` and ``iat`` with a small leeway, and the nonce.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
import warnings
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped]
from authlib.integrations.base_client import OAuthError  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import ClaimError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from broker.errors import BrokerError, ConfigurationError
from broker.portal.oidc_settings import PortalOidcSettings

logger = logging.getLogger(__name__)

with warnings.catch_warnings():
    # authlib 1.9 would rather use the httpx2 package and warns when it falls back to httpx
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]

ALGORITHMS = ["ES256", "ES384", "ES512", "PS256", "RS256", "Ed25519", "EdDSA"]
"""What an ID token may be signed with (never ``none`` or a MAC); the provider's discovery may
narrow it."""
JWKS_REFRESH_S = 60.0


_NOT_A_CODE = re.compile(r"[^A-Za-z0-9_.-]")


def code_of(error: str) -> str:
    """An OAuth error code as we repeat it (the provider's, or the query's): short and plain."""
    return _NOT_A_CODE.sub("", error)[:40] or "unknown"


class OidcRefused(BrokerError):
    """A sign-in at the provider that does not sign the customer in here (an HTML page)."""

    def __init__(
        self, message: str, status_code: int, title: str, notes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status_code, self.title, self.notes = status_code, title, notes


class Provider:
    """One OpenID provider: its discovery and JWKS (cached), its authorization URL and token
    endpoint through authlib's ``OAuth2Client``, over TLS checked against ``ca_bundle`` or the
    system trust store."""

    def __init__(self, settings: PortalOidcSettings) -> None:
        assert settings.issuer is not None and settings.client_id is not None
        self.settings, self.issuer, self.client_id = settings, settings.issuer, settings.client_id
        cafile = str(settings.ca_bundle) if settings.ca_bundle else None
        try:
            self._ctx = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"BROKER_PORTAL_OIDC_CA_BUNDLE {cafile}: not a readable PEM bundle ({exc})"
            ) from None
        self._lock = threading.Lock()
        self._meta: tuple[float, dict[str, Any]] | None = None
        self._keys: tuple[float, KeySet] | None = None

    def client(self) -> Any:
        """A fresh authlib client (one per sign-in: it keeps the token it fetched)."""
        secret = self.settings.client_secret
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=secret.get_secret_value() if secret else None,
            scope=self.settings.scopes,
            redirect_uri=self.settings.redirect_uri,
            code_challenge_method="S256",
            verify=self._ctx,
            timeout=self.settings.timeout_s,
            follow_redirects=False,
        )

    def _unavailable(self, what: str, cause: object = None) -> OidcRefused:
        """The 502 page; the cause goes to the log, not to the customer."""
        logger.warning("OpenID provider %s %s: %s", self.issuer, what, cause)
        return OidcRefused(
            f"{self.settings.label} {what}. Try again in a few minutes.",
            502,
            "The sign-in service does not answer",
        )

    def _get_json(self, url: str, what: str) -> Any:
        try:
            with self.client() as client:
                response = client.request(
                    "GET", url, headers={"Accept": "application/json"}, withhold_token=True
                )
                response.raise_for_status()
                return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(f"could not be reached for its {what}", exc) from None

    def metadata(self) -> dict[str, Any]:
        """The discovery document (OpenID Connect Discovery 1.0 §4), cached."""
        with self._lock:
            cached = self._meta
        if cached and time.monotonic() - cached[0] < self.settings.discovery_ttl_s:
            return cached[1]
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = self._get_json(url, "discovery document")
        if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
            raise self._unavailable("answered with a discovery document for another issuer")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or urlsplit(value).scheme != "https":
                raise self._unavailable(f"published no https {name}")
        with self._lock:
            self._meta = (time.monotonic(), doc)
        return doc

    def keys(self, stale: bool = False) -> KeySet:
        """The provider's JWKS, cached; ``stale``: a token names a key we do not have, so read
        it again (at most once a minute)."""
        with self._lock:
            cached = self._keys
        if cached:
            age = time.monotonic() - cached[0]
            if age < self.settings.discovery_ttl_s and not (stale and age >= JWKS_REFRESH_S):
                return cached[1]
        doc = self._get_json(str(self.metadata()["jwks_uri"]), "signing keys")
        try:
            keys = KeySet.import_key_set(doc)
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise self._unavailable("published signing keys we cannot read", exc) from None
        with self._lock:
            self._keys = (time.monotonic(), keys)
        return keys

    def algorithms(self) -> list[str]:
        offered = self.metadata().get("id_token_signing_alg_values_supported")
        if isinstance(offered, list):
            return [alg for alg in ALGORITHMS if alg in offered]
        return ["RS256"]  # the default of OpenID Connect Discovery 1.0 §3

    def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        endpoint = self.metadata()["authorization_endpoint"]
        with self.client() as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, code_verifier=verifier, nonce=nonce
            )
        return str(url)

    def redeem(self, code: str, verifier: str) -> str:
        """The ID token the token endpoint returns for ``code`` and the PKCE verifier."""
        endpoint = self.metadata()["token_endpoint"]
        try:
            with self.client() as client:
                token = client.fetch_token(
                    endpoint, grant_type="authorization_code", code=code, code_verifier=verifier
                )
        except OAuthError as exc:
            logger.info("OpenID provider %s refused a code: %s", self.issuer, exc)
            raise TokenRefused(code_of(str(exc.error))) from None
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code < 500:
                raise TokenRefused(f"http_{exc.response.status_code}") from None
            raise self._unavailable("could not confirm the sign-in", exc) from None
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable("could not confirm the sign-in", exc) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise self._unavailable("confirmed the sign-in without an ID token")
        return id_token


class TokenRefused(Exception):
    """The token endpoint refused the code (``error``: its OAuth error code)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class IdTokenInvalid(Exception):
    """Why an ID token is not accepted: ``reason`` is short, for the audit log."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def verify_id_token(token: str, provider: Provider, nonce: str, now: int) -> dict[str, Any]:
    """The claims of a valid ID token (OpenID Connect Core 1.0 §3.1.3.7), or ``IdTokenInvalid``."""
    settings = provider.settings
    algorithms = provider.algorithms()
    try:
        try:
            decoded = jwt.decode(token, provider.keys(), algorithms=algorithms)
        except InvalidKeyIdError:
            decoded = jwt.decode(token, provider.keys(stale=True), algorithms=algorithms)
    except InvalidKeyIdError:
        raise IdTokenInvalid("unknown_key", "it names a key the provider does not have") from None
    except (JoseError, ValueError) as exc:
        logger.info("ID token from %s does not verify: %s", provider.issuer, exc)
        raise IdTokenInvalid("signature", "its signature does not verify") from None
    claims = decoded.claims
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=settings.leeway_s,
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": provider.client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except ClaimError as exc:
        claim = code_of(exc.claim)
        raise IdTokenInvalid(claim, f"its {claim} claim is missing, wrong or expired") from None
    except JoseError as exc:
        logger.info("ID token from %s has claims we cannot read: %s", provider.issuer, exc)
        raise IdTokenInvalid("claims", "its claims cannot be read") from None
    audience, azp = claims["aud"], claims.get("azp")
    several = isinstance(audience, list) and len(audience) > 1
    if (several or azp is not None) and azp != provider.client_id:
        raise IdTokenInvalid("azp", "it was issued to another party (azp)")
    if claims["iat"] < now - settings.max_age_s - settings.leeway_s:
        raise IdTokenInvalid("iat", "it was issued too long ago")
    subject = claims["sub"]
    if not isinstance(subject, str) or not 1 <= len(subject) <= 255:
        raise IdTokenInvalid("sub", "its subject is not a string of 1 to 255 characters")
    return claims
