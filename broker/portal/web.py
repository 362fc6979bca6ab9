"""The customer portal's HTTPS app: sign-in, the consent page, and the customer's own API.

Server-rendered HTML that works without JavaScript (``broker.portal.pages``). Customers have no
client certificates, so the portal listens on its own TLS endpoint that authenticates the server
only; customers authenticate with their account (``broker.portal.signin``). Sessions are kept on
the server (``broker.portal.sessions``: sign-out ends one, a password change at ``/me/password``
all of the customer's); the cookie carries only a sealed random id (HttpOnly, Secure,
SameSite=Lax so the redirect from a third party's site keeps the session; the consent form
carries a CSRF token bound to the session: ``broker.portal.parts``). With
``BROKER_PORTAL_OIDC_ISSUER`` and ``_CLIENT_ID`` set, customers may instead sign in at an
upstream OpenID Connect provider (``broker.portal.oidc``), and get the same kind of session. A
third party's consent request is ``broker.portal.consent``. A customer reaches only their own
data (C2.2): every ``/me`` route takes the customer from the session, never from the request
(``broker.portal.me``, ``broker.portal.password``).

Limits before any work (T7): wrong passwords make an account's, and an address's, next sign-in
wait longer and longer (``broker.portal.throttle``: 429, never a lock); sign-ins have a token
bucket per client address, consent decisions and withdrawals one per signed-in customer
(``broker.portal.rate``: ``BROKER_PORTAL_RATE_PER_S``, ``_BURST``): over it, 429 with
Retry-After and a page that says when to try again. Forms are bounded
(``BROKER_PORTAL_MAX_BODY_BYTES``, 413) before more than the bound is read; pages of access
history are at most ``MAX_PAGE`` entries (422 beyond). Form fields and query parameters with a
control character are refused (422). Every answer is ``no-store``, ``nosniff`` and HSTS, a bug
answers 500 in the one error shape (``broker.api.hardening``); the OpenAPI description is not
served (``portal_app(rt).openapi()`` builds it), nor are Swagger UI or ReDoc.
"""

from __future__ import annotations

import html

from fastapi import FastAPI, Request
from fastapi.responses import Response

from broker.api.hardening import install_hardening
from broker.api.limits import BodyLimit
from broker.api.schemas import (
    document_error_family,
    error_json,
    error_responses,
    install_error_family,
)
from broker.customers.errors import AccountError, SignInFailed
from broker.errors import BrokerError, Throttled
from broker.oauth.errors import AuthorizeError
from broker.portal import pages
from broker.portal.consent import consent_router
from broker.portal.me import me_router
from broker.portal.oidc import oidc_router
from broker.portal.oidc_settings import PortalOidcSettings
from broker.portal.parts import PortalParts
from broker.portal.password import password_router
from broker.portal.provider import OidcRefused
from broker.portal.sessions import NotSignedIn
from broker.portal.signin import sign_in_router
from broker.runtime.core import Runtime


def portal_app(rt: Runtime, oidc: PortalOidcSettings | None = None) -> FastAPI:
    """The portal; ``oidc`` (default: the ``BROKER_PORTAL_OIDC_`` variables) adds sign-in at an
    upstream OpenID Connect provider when it names an issuer and a client id."""
    oidc = oidc if oidc is not None else PortalOidcSettings()
    if oidc.enabled and not rt.settings.development:
        oidc.refuse_placeholder_secret()
    app = FastAPI(
        title="Smart-meter data broker: customer portal",
        version="0.1.0",
        responses=error_responses(
            401,
            403,
            s401="NotSignedIn: sign in first, or again (an HTML page)",
            s403="Forbidden: a stale or forged form",
        ),
        openapi_url=None,  # not published to anonymous callers (``app.openapi()`` builds it)
        docs_url=None,
        redoc_url=None,
    )
    parts = PortalParts(rt)
    app.add_exception_handler(BrokerError, _error)
    install_error_family(app)
    document_error_family(app)
    app.add_middleware(
        BodyLimit, max_bytes=rt.settings.portal_max_body_bytes, refuse=pages.too_large
    )
    install_hardening(app, rt.settings)  # outermost: headers, control characters, bugs
    app.include_router(consent_router(parts, oidc))
    app.include_router(sign_in_router(parts, oidc))
    app.include_router(me_router(parts))
    app.include_router(
        password_router(
            rt,
            parts.sessions,
            parts.throttle,
            parts.devices,
            parts.csrf,
            pages.page,
            parts.signed_in,
        )
    )
    if oidc.enabled:
        app.include_router(
            oidc_router(rt, oidc, parts.cookies, parts.signed_in, parts.rate.sign_in)
        )
    return app


async def _error(_request: Request, exc: Exception) -> Response:
    """A refusal: a page where a browser is at work, the one error shape otherwise."""
    assert isinstance(exc, BrokerError)
    if isinstance(exc, Throttled):
        return pages.wait_page(exc)
    if isinstance(exc, OidcRefused):
        notes = "".join(f"<p>{html.escape(note)}</p>" for note in exc.notes)
        body = f"<p>{html.escape(exc.message)}</p>{notes}"
        return pages.page(exc.title, body, exc.status_code)
    if isinstance(exc, AuthorizeError | SignInFailed | NotSignedIn | AccountError):
        return pages.page("Cannot continue", f"<p>{html.escape(exc.message)}</p>", exc.status_code)
    return error_json(type(exc).__name__, exc.message, exc.status_code)
