"""Customers sign in at an upstream OpenID Connect provider (X.1332 C2.2): the
production alternative to local accounts, through authlib's client.

``GET /login/oidc?next=...`` reads the provider's discovery (cached), keeps a fresh ``state``,
``nonce`` and PKCE verifier in a short-lived cookie signed with the portal's session key, and
sends the customer to the provider's authorization endpoint (code flow, PKCE S256).
``GET /login/oidc/callback`` checks the state against that cookie and spends it (a replayed
callback is refused), redeems the code at the token endpoint with the verifier, and validates
the ID token with joserfc: signature against the provider's JWKS, ``iss``, ``aud`` (the
client id; ``azp`` when there are several), ``exp`` and ``iat`` with a small leeway, and the
nonce. The identity then names a customer: the configured claim's value, or the link an
operator made from (issuer, subject) to a customer (``broker customers link-identity``). The
customer gets the same session cookie as after a password and is sent to ``next``, which may
only be this portal's ``/oauth/authorize`` or ``/me`` pages.

Every refusal is a page with a non-2xx status; the security events among them (state missing,
wrong or spent, a token the provider would not issue, an ID token that does not verify, an
identity linked to no customer) are audited as ``customer.login_refused`` with the method and
the issuer; a sign-in as ``customer.login``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import ssl
import threading
import time
import warnings
from collections.abc import Callable
from typing import Annotated, Any, Protocol
from urllib.parse import unquote, urlsplit

import httpx
from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped]
from authlib.integrations.base_client import OAuthError  # type: ignore[import-untyped]
from fastapi import APIRouter, Cookie, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import ClaimError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from sqlmodel import Session

from broker.audit.events import AuditEvent
from broker.customers.identities import CUSTOMER_REF, Identities
from broker.errors import BrokerError, ConfigurationError
from broker.portal.oidc_settings import CALLBACK_PATH, PortalOidcSettings
from broker.runtime.core import Runtime

with warnings.catch_warnings():
    # authlib 1.9 would rather use the httpx2 package and warns when it falls back to httpx
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)
STATE_COOKIE = "broker_oidc"
STATE_PURPOSE = "oidc-state"
DEFAULT_NEXT = "/me/consents"
ALGORITHMS = ["ES256", "ES384", "ES512", "PS256", "RS256", "Ed25519", "EdDSA"]
"""What an ID token may be signed with (never ``none`` or a MAC); the provider's discovery may
narrow it."""
JWKS_REFRESH_S = 60.0
SPENT_MAX = 10_000
_NOT_A_CODE = re.compile(r"[^A-Za-z0-9_.-]")


def _code(error: str) -> str:
    """An OAuth error code as we repeat it (the provider's, or the query's): short and plain."""
    return _NOT_A_CODE.sub("", error)[:40] or "unknown"


class OidcRefused(BrokerError):
    """A sign-in at the provider that does not sign the customer in here (an HTML page)."""

    def __init__(
        self, message: str, status_code: int, title: str, notes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status_code, self.title, self.notes = status_code, title, notes


class Sealer(Protocol):
    """The portal's HMAC signing of cookies (``broker.portal.sessions.CookieSigner``)."""

    def seal(self, purpose: str, payload: str, ttl_s: int) -> str: ...

    def open(self, purpose: str, sealed: str | None) -> str | None: ...


def safe_next(target: str) -> str:
    """``target`` if it is a path of this portal where a sign-in may lead; never elsewhere."""
    parts = urlsplit(target)
    clean = target.startswith("/") and not target.startswith("//")
    clean = clean and not any(c.isspace() or not c.isprintable() or c == "\\" for c in target)
    clean = clean and not parts.scheme and not parts.netloc and ".." not in unquote(parts.path)
    path = parts.path
    if not clean or not (path in ("/oauth/authorize", "/me") or path.startswith("/me/")):
        raise OidcRefused(
            "after signing in you can only go to this portal's consent page or your own pages",
            400,
            "Not a page of this portal",
        )
    return target


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
            raise TokenRefused(_code(str(exc.error))) from None
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
        claim = _code(exc.claim)
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


class _Spent:
    """States already used, kept for the state cookie's lifetime (a replayed callback within
    it is refused before the provider is asked; after a restart the provider's single-use code
    still refuses it)."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl, self._until, self._lock = ttl_s, dict[str, float](), threading.Lock()

    def spend(self, state: str) -> bool:
        key = hashlib.sha256(state.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._until.get(key, 0.0) > now:
                return False
            if len(self._until) >= SPENT_MAX:
                self._until = {k: t for k, t in self._until.items() if t > now}
                while len(self._until) >= SPENT_MAX:
                    del self._until[next(iter(self._until))]
            self._until[key] = now + self._ttl
            return True


def oidc_router(
    rt: Runtime,
    settings: PortalOidcSettings,
    cookies: Sealer,
    signed_in: Callable[[str, str], Response],
    limit: Callable[[Request], None],
) -> APIRouter:
    """``/login/oidc`` and its callback. ``signed_in(customer, target)`` answers with the
    session cookie, as the local sign-in does; ``limit`` spends the address's sign-in token."""
    router = APIRouter(tags=["sign-in"])
    provider = Provider(settings)
    identities = Identities(rt.audit, rt.clock, rt.hasher)
    spent = _Spent(settings.max_age_s)
    issuer = provider.issuer

    def refuse(
        why: str,
        message: str,
        status: int,
        title: str = "You are not signed in",
        notes: tuple[str, ...] = (),
    ) -> OidcRefused:
        """Audit a refused sign-in (committed before the page answers) and say why."""
        details = {"method": "oidc", "issuer": issuer, "why": why}
        event = AuditEvent("customer.login_refused", "customer", None, details)
        with rt.db.transaction() as session:
            rt.audit.record(session, [event])
        return OidcRefused(message, status, title, notes)

    @router.get(
        "/login/oidc",
        summary=f"Sign in at the OpenID provider ({settings.label})",
        response_class=HTMLResponse,
        responses=_REFUSALS,
        status_code=303,
    )
    def start(
        request: Request, next: Annotated[str, Query(max_length=2048)] = DEFAULT_NEXT
    ) -> Response:
        limit(request)
        target = safe_next(next)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        url = provider.authorization_url(state, nonce, verifier)
        kept = json.dumps({"state": state, "nonce": nonce, "verifier": verifier, "next": target})
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(
            STATE_COOKIE,
            cookies.seal(STATE_PURPOSE, kept, settings.max_age_s),
            max_age=settings.max_age_s,
            path="/login/oidc",
            secure=True,
            httponly=True,
            samesite="lax",
        )
        return response

    @router.get(
        CALLBACK_PATH,
        summary="The OpenID provider's answer",
        response_class=HTMLResponse,
        responses=_REFUSALS,
        status_code=303,
    )
    def callback(
        request: Request,
        state: Annotated[str, Query(max_length=512)] = "",
        code: Annotated[str, Query(max_length=2048)] = "",
        error: Annotated[str, Query(max_length=256)] = "",
        broker_oidc: Annotated[str | None, Cookie(max_length=8192)] = None,
    ) -> Response:
        limit(request)
        opened = cookies.open(STATE_PURPOSE, broker_oidc)
        if opened is None:
            raise refuse(
                "no_state",
                "This sign-in has expired or was not started here. Start again.",
                400,
            )
        kept = json.loads(opened)
        if not state or not secrets.compare_digest(state.encode(), kept["state"].encode()):
            raise refuse(
                "state_mismatch",
                "The answer from the sign-in service does not belong to this sign-in. Start again.",
                400,
            )
        if not spent.spend(state):
            raise refuse("replayed", "This sign-in was already used. Start again.", 400)
        if error:
            raise OidcRefused(
                f"{settings.label} did not sign you in ({_code(error)}).",
                401,
                "You are not signed in",
            )
        if not code:
            raise OidcRefused("The sign-in service sent no code. Start again.", 400, "Bad answer")
        try:
            id_token = provider.redeem(code, kept["verifier"])
        except TokenRefused as exc:
            raise refuse(
                f"token_refused:{exc.error}",
                f"{settings.label} would not confirm this sign-in ({exc.error}). Start again.",
                401,
            ) from None
        now = int(rt.clock.now().timestamp())
        try:
            claims = verify_id_token(id_token, provider, kept["nonce"], now)
        except IdTokenInvalid as exc:
            raise refuse(
                f"id_token:{exc.reason}",
                f"The sign-in could not be verified: {exc.message}.",
                401,
            ) from None
        subject = str(claims["sub"])
        with rt.db.transaction() as session:
            customer = _customer_of(session, identities, settings, issuer, claims)
            if customer is not None:
                event = AuditEvent(
                    "customer.login",
                    "customer",
                    rt.hasher(customer),
                    {"method": "oidc", "issuer": issuer},
                )
                rt.audit.record(session, [event])
        if customer is None:
            raise refuse(
                "not_linked",
                f"Your account at {settings.label} is not linked to an energy account here.",
                403,
                "Your account is not linked",
                (
                    "Ask the utility's customer service to link it; they need these two lines:",
                    f"issuer: {issuer}",
                    f"subject: {subject}",
                ),
            )
        response = signed_in(customer, kept["next"])
        response.delete_cookie(
            STATE_COOKIE, path="/login/oidc", secure=True, httponly=True, samesite="lax"
        )
        return response

    return router


def _customer_of(
    session: Session,
    identities: Identities,
    settings: PortalOidcSettings,
    issuer: str,
    claims: dict[str, Any],
) -> str | None:
    if settings.customer_claim:
        value = claims.get(settings.customer_claim)
        return value if isinstance(value, str) and CUSTOMER_REF.match(value) else None
    return identities.customer_of(session, issuer, str(claims["sub"]))


_HTML = {"text/html": {"schema": {"type": "string"}}}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "A return address not of this portal, or a missing, wrong or spent "
        "state (a page)",
        "content": _HTML,
    },
    401: {
        "description": "The provider did not sign the customer in, or its ID token does not "
        "verify (a page)",
        "content": _HTML,
    },
    403: {"description": "The identity is linked to no customer (a page)", "content": _HTML},
    502: {"description": "The provider cannot be reached (a page)", "content": _HTML},
}
