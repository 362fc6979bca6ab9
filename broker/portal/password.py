"""A signed-in customer changes their password (X.1332 C2.2): ``/me/password``.

The form carries a CSRF token bound to the session; the current password is checked under the
sign-in throttle (``broker.portal.throttle``: a stolen session cannot guess it faster than a
sign-in could; the browser's device cookie counts as at sign-in), the new one must be long
enough. The change ends every session of the customer, wherever it was opened, and gives this
browser a new one.
"""

from __future__ import annotations

import hmac
import html
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.api.schemas import RETRY_AFTER, error_responses
from broker.customers.accounts import Accounts
from broker.errors import Forbidden
from broker.kit.text import Text
from broker.portal.sessions import NotSignedIn, PortalSessions
from broker.portal.throttle import DeviceCookies, Throttle, source_of
from broker.runtime.core import Runtime

CSRF_WHAT = "password"
_HTML = {"text/html": {"schema": {"type": "string"}}}
_PAGES: dict[int | str, dict[str, Any]] = error_responses(
    403, s403="Forbidden: a stale or forged form"
) | {
    401: {"description": "The current password is wrong, or no session (a page)", "content": _HTML},
    422: {"description": "AccountError: the new password is too short (a page)", "content": _HTML},
    429: {
        "description": "Throttled: too many wrong passwords for the account or from the address; "
        "a page says when to try again (Retry-After)",
        "headers": RETRY_AFTER,
        "content": _HTML,
    },
}


def password_router(
    rt: Runtime,
    sessions: PortalSessions,
    throttle: Throttle,
    devices: DeviceCookies,
    csrf: Callable[[str, str], str],
    page: Callable[[str, str], HTMLResponse],
    signed_in: Callable[[str, str], Response],
) -> APIRouter:
    """``GET``/``POST /me/password``; ``signed_in(customer, target)`` answers with a new
    session cookie, ``page(title, body)`` renders a page."""
    router = APIRouter(prefix="/me", tags=["customer"])
    accounts = Accounts(rt.audit, rt.clock, rt.hasher)

    @router.get("/password", response_class=HTMLResponse, summary="The password change form")
    def form(broker_session: Annotated[str | None, Cookie()] = None) -> Response:
        try:
            sessions.customer_of(broker_session)
        except NotSignedIn:
            return RedirectResponse("/login", status_code=303)
        assert broker_session is not None
        token = csrf(broker_session, CSRF_WHAT)
        return page(
            "Change your password",
            "<form method=post action=/me/password>"
            "<p><label>Current password <input name=current_password type=password"
            " autocomplete=current-password required></label></p>"
            "<p><label>New password (at least 12 characters) <input name=new_password"
            " type=password autocomplete=new-password minlength=12 required></label></p>"
            f'<input type=hidden name=token value="{html.escape(token)}">'
            "<p><button>Change password</button></p></form>"
            "<p>You will be signed out everywhere else.</p>",
        )

    @router.post(
        "/password",
        summary="Change your password: every other session ends",
        status_code=303,
        responses=_PAGES,
    )
    def change(
        request: Request,
        current_password: Annotated[Text, Form(max_length=1024)],
        new_password: Annotated[Text, Form(max_length=1024)],
        token: Annotated[Text, Form(max_length=128)],
        broker_session: Annotated[str | None, Cookie()] = None,
        broker_device: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        customer = sessions.customer_of(broker_session)
        assert broker_session is not None
        if not hmac.compare_digest(csrf(broker_session, CSRF_WHAT).encode(), token.encode()):
            raise Forbidden("the form is stale or not ours; start again")
        with rt.db.transaction() as session:
            username = accounts.username_of(session, customer)
        throttle.guarded(
            rt.db.transaction,
            username,
            source_of(request),
            lambda session: accounts.change_password(
                session, customer, current_password, new_password
            ),
            devices.of(broker_device, username),
        )
        return signed_in(customer, "/me")

    return router
