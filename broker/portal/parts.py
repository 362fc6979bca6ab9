"""What the routes of one portal app share: the session cookie and how a sign-in sets it, the
CSRF tokens of its forms, the server-side sessions, the sign-in throttle, the device cookies and
the request rate.

The session cookie (``COOKIE``) carries only a sealed random id (``broker.portal.sessions``),
and is HttpOnly, Secure and SameSite=Lax, so that the redirect from a third party's site keeps
the session. A form's CSRF token is an HMAC, under the portal's session key, of the session
cookie and what the form is for, so it is bound to the session.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import RedirectResponse, Response

from broker.keys.files import ensure_b64_key
from broker.portal.rate import PortalRate
from broker.portal.sessions import CookieSigner, PortalSessions
from broker.portal.throttle import DeviceCookies, Throttle
from broker.runtime.core import Runtime

COOKIE = "broker_session"


def session_key_path(rt: Runtime) -> Path:
    return rt.settings.keys_dir / "portal-session.key"


class PortalParts:
    """The cookie signer (the portal's session key), sessions, throttle, device cookies and
    rate of one portal app, built once and handed to each of its routers."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cookies = CookieSigner(ensure_b64_key(rt.settings, session_key_path(rt)))
        self.rate = PortalRate(rt)
        self.sessions = PortalSessions(
            rt.db.transaction, rt.clock, self.cookies, rt.settings.portal_session_s
        )
        self.throttle = Throttle(rt.settings, rt.clock, rt.hasher)
        self.devices = DeviceCookies(self.cookies)

    def customer_of(self, cookie: str | None) -> str:
        """The signed-in customer (``NotSignedIn`` otherwise): never taken from the request."""
        return self.sessions.customer_of(cookie)

    def csrf(self, cookie: str, what: str) -> str:
        return self.cookies.mac("csrf", f"{cookie}|{what}")

    def signed_in(self, customer: str, target: str) -> Response:
        """The answer to a sign-in, by password or at the OpenID provider: the session."""
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            self.sessions.start(customer),
            max_age=self.sessions.lifetime_s,
            secure=True,
            httponly=True,
            samesite="lax",
        )
        return response
