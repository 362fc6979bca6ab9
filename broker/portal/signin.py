"""Signing in with a password and signing out: ``GET``/``POST /login`` and ``POST /logout``.

Sign-ins are limited before any work: a token bucket per client address (``PortalRate``), and
wrong passwords make an account's, and an address's, next sign-in wait longer and longer
(``broker.portal.throttle``: 429, never a lock; a browser the customer signed in from before
is not kept waiting by strangers). A sign-in starts a session kept on the server and sends the
customer on to the consent request they came from, or to ``/me``; sign-out ends the session.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.customers.accounts import Accounts
from broker.kit.text import Text
from broker.portal import pages
from broker.portal.oidc_settings import PortalOidcSettings
from broker.portal.parts import COOKIE, PortalParts
from broker.portal.throttle import source_of


def sign_in_router(parts: PortalParts, oidc: PortalOidcSettings) -> APIRouter:
    """``/login`` and ``/logout``; the form links to the OpenID provider when ``oidc`` is on."""
    router = APIRouter()
    rt = parts.rt
    accounts = Accounts(rt.audit, rt.clock, rt.hasher)

    @router.get("/login", response_class=HTMLResponse, summary="The sign-in form")
    def login_form() -> HTMLResponse:
        return pages.login_form("", oidc.label if oidc.enabled else None)

    @router.post(
        "/login",
        response_class=HTMLResponse,
        summary="Sign in",
        responses=pages.TOO_LARGE | pages.THROTTLED,
    )
    def login(
        request: Request,
        username: Annotated[Text, Form()],
        password: Annotated[Text, Form()],
        next: Annotated[Text, Form()] = "",
        broker_device: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        parts.rate.sign_in(request)
        device = parts.devices.of(broker_device, username)
        customer = parts.throttle.guarded(
            rt.db.transaction,
            username,
            source_of(request),
            lambda session: accounts.sign_in(session, username, password),
            device,
        )
        response = parts.signed_in(customer, "/oauth/authorize?" + next if next else "/me")
        parts.devices.remember(response, username, device)
        return response

    @router.post("/logout", summary="Sign out: the session ends on the server")
    def logout(broker_session: Annotated[str | None, Cookie()] = None) -> Response:
        parts.sessions.end(broker_session)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    return router
