"""Customers sign in at an upstream OpenID Connect provider (X.1332 C2.2): the
production alternative to local accounts, through authlib's client.

``GET /login/oidc?next=...`` reads the provider's discovery (cached), keeps a fresh ``state``,
``nonce`` and PKCE verifier in a short-lived cookie signed with the portal's session key, and
sends the customer to the provider's authorization endpoint (code flow, PKCE S256).
``GET /login/oidc/callback`` checks the state against that cookie and spends it (a replayed
callback is refused), redeems the code at the token endpoint with the verifier, and validates
(``broker.portal.provider``)
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
import secrets
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Protocol
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Cookie, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from broker.audit.events import AuditEvent
from broker.customers.identities import CUSTOMER_REF, Identities
from broker.portal.oidc_settings import CALLBACK_PATH, PortalOidcSettings
from broker.portal.provider import (
    IdTokenInvalid,
    OidcRefused,
    Provider,
    TokenRefused,
    code_of,
    verify_id_token,
)
from broker.runtime.core import Runtime

logger = logging.getLogger(__name__)
STATE_COOKIE = "broker_oidc"
STATE_PURPOSE = "oidc-state"
DEFAULT_NEXT = "/me/consents"
SPENT_MAX = 10_000


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


class _SignIn:
    """The steps of a sign-in at the provider, each refusing with an audited page."""

    def __init__(self, rt: Runtime, settings: PortalOidcSettings, cookies: Sealer) -> None:
        self.rt, self.settings, self.cookies = rt, settings, cookies
        self.provider = Provider(settings)
        self.identities = Identities(rt.audit, rt.clock, rt.hasher)
        self.spent = _Spent(settings.max_age_s)
        self.issuer = self.provider.issuer

    def refuse(
        self,
        why: str,
        message: str,
        status: int,
        title: str = "You are not signed in",
        notes: tuple[str, ...] = (),
    ) -> OidcRefused:
        """Audit a refused sign-in (committed before the page answers) and say why."""
        details = {"method": "oidc", "issuer": self.issuer, "why": why}
        event = AuditEvent("customer.login_refused", "customer", None, details)
        with self.rt.db.transaction() as session:
            self.rt.audit.record(session, [event])
        return OidcRefused(message, status, title, notes)

    def start(self, target: str) -> Response:
        """Off to the provider, the state, nonce and PKCE verifier kept in a sealed cookie."""
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        url = self.provider.authorization_url(state, nonce, verifier)
        kept = json.dumps({"state": state, "nonce": nonce, "verifier": verifier, "next": target})
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(
            STATE_COOKIE,
            self.cookies.seal(STATE_PURPOSE, kept, self.settings.max_age_s),
            max_age=self.settings.max_age_s,
            path="/login/oidc",
            secure=True,
            httponly=True,
            samesite="lax",
        )
        return response

    def kept(self, state: str, cookie: str | None) -> dict[str, str]:
        """What ``start`` kept for this sign-in, once: the answer's state must match it."""
        opened = self.cookies.open(STATE_PURPOSE, cookie)
        if opened is None:
            raise self.refuse(
                "no_state",
                "This sign-in has expired or was not started here. Start again.",
                400,
            )
        kept: dict[str, str] = json.loads(opened)
        if not state or not secrets.compare_digest(state.encode(), kept["state"].encode()):
            raise self.refuse(
                "state_mismatch",
                "The answer from the sign-in service does not belong to this sign-in. Start again.",
                400,
            )
        if not self.spent.spend(state):
            raise self.refuse("replayed", "This sign-in was already used. Start again.", 400)
        return kept

    def claims(self, code: str, error: str, kept: dict[str, str]) -> dict[str, Any]:
        """The ID token's verified claims for the provider's answer (``code`` or ``error``)."""
        label = self.settings.label
        if error:
            raise OidcRefused(
                f"{label} did not sign you in ({code_of(error)}).", 401, "You are not signed in"
            )
        if not code:
            raise OidcRefused("The sign-in service sent no code. Start again.", 400, "Bad answer")
        try:
            id_token = self.provider.redeem(code, kept["verifier"])
        except TokenRefused as exc:
            raise self.refuse(
                f"token_refused:{exc.error}",
                f"{label} would not confirm this sign-in ({exc.error}). Start again.",
                401,
            ) from None
        now = int(self.rt.clock.now().timestamp())
        try:
            return verify_id_token(id_token, self.provider, kept["nonce"], now)
        except IdTokenInvalid as exc:
            raise self.refuse(
                f"id_token:{exc.reason}",
                f"The sign-in could not be verified: {exc.message}.",
                401,
            ) from None

    def customer(self, claims: dict[str, Any]) -> str:
        """The customer the identity names, its sign-in audited; refused when it names none."""
        rt, issuer = self.rt, self.issuer
        with rt.db.transaction() as session:
            customer = _customer_of(session, self.identities, self.settings, issuer, claims)
            if customer is not None:
                details = {"method": "oidc", "issuer": issuer}
                event = AuditEvent("customer.login", "customer", rt.hasher(customer), details)
                rt.audit.record(session, [event])
        if customer is None:
            raise self.refuse(
                "not_linked",
                f"Your account at {self.settings.label} is not linked to an energy account here.",
                403,
                "Your account is not linked",
                (
                    "Ask the utility's customer service to link it; they need these two lines:",
                    f"issuer: {issuer}",
                    f"subject: {claims['sub']}",
                ),
            )
        return customer


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
    sign_in = _SignIn(rt, settings, cookies)

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
        return sign_in.start(safe_next(next))

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
        kept = sign_in.kept(state, broker_oidc)
        customer = sign_in.customer(sign_in.claims(code, error, kept))
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
