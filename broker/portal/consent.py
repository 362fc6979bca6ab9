"""A third party's consent request (OAuth 2.0 authorization code with PKCE): ``GET
/oauth/authorize`` and ``POST /oauth/authorize/decision``.

The request is checked first (a registered, active client; purposes and categories of the
active vocabulary). A customer who is not signed in gets the sign-in form, which leads back
here; a signed-in one gets the consent page, which says who asks for what, how fine, how long
and for what, and lets them narrow it. The decision form carries a CSRF token bound to the
session and spends the customer's rate (``PortalRate``). Approving writes the consent event
(collection method ``oauth_consent_page``, the plain notice hashed) and a single-use code bound
to that consent; either answer goes back to the client's redirect URI with its ``state``.
"""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Cookie, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from broker.consent.service import ConsentService
from broker.errors import Forbidden
from broker.kit.text import Text
from broker.oauth.errors import AuthorizeError
from broker.oauth.grant import ConsentAsk, check_request, issue_code, narrowed
from broker.policy.service import active_vocabulary
from broker.portal import pages
from broker.portal.oidc_settings import PortalOidcSettings
from broker.portal.pages import PLAIN
from broker.portal.parts import PortalParts
from broker.portal.sessions import NotSignedIn
from broker.recipients.service import Recipients
from broker.runtime.core import Runtime
from broker.runtime.wiring import open_consents
from consent_ledger import ConsentRequest, notice_hash


def consent_router(parts: PortalParts, oidc: PortalOidcSettings) -> APIRouter:
    """``/oauth/authorize`` and its decision; the sign-in form it shows links to the OpenID
    provider when ``oidc`` is on."""
    router = APIRouter()
    rt = parts.rt
    consents = open_consents(rt)
    recipients = Recipients(rt.audit, rt.clock)

    @router.get(
        "/oauth/authorize", response_class=HTMLResponse, summary="Consent request (OAuth 2.0, PKCE)"
    )
    def authorize(
        request: Request, broker_session: Annotated[str | None, Cookie()] = None
    ) -> Response:
        params = dict(request.query_params)
        ask = _ask_of(rt, recipients, params)
        try:
            parts.customer_of(broker_session)
        except NotSignedIn:
            return pages.login_form(urlencode(params), oidc.label if oidc.enabled else None)
        assert broker_session is not None
        with rt.db.transaction() as session:
            recipient = recipients.get(session, ask.client_id)
        return pages.consent_page(
            ask,
            recipient.display_name,
            urlencode(params),
            parts.csrf(broker_session, urlencode(params)),
        )

    @router.post(
        "/oauth/authorize/decision",
        summary="Approve, narrow or deny a consent request",
        responses=pages.TOO_LARGE | pages.THROTTLED,
    )
    def decision(
        query: Annotated[Text, Form()],
        token: Annotated[Text, Form()],
        action: Annotated[Text, Form()],
        categories: Annotated[list[Text] | None, Form()] = None,
        granularity: Annotated[Text, Form()] = "",
        days: Annotated[int, Form(ge=1, le=3660)] = 1,
        broker_session: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        customer = parts.customer_of(broker_session)
        assert broker_session is not None
        parts.rate.customer(customer)
        if not hmac.compare_digest(parts.csrf(broker_session, query).encode(), token.encode()):
            raise Forbidden("the form is stale or not ours; start again")
        ask = _ask_of(rt, recipients, dict(parse_qsl(query)))
        if action != "approve":
            return _back(ask, {"error": "access_denied"})
        given = narrowed(ask, categories or [], granularity, days)
        return _back(given, {"code": _give(rt, consents, customer, given)})

    return router


def _ask_of(rt: Runtime, recipients: Recipients, params: dict[str, str]) -> ConsentAsk:
    """The checked request, from a client that is registered and active."""
    vocab = active_vocabulary(rt.settings, rt.audit, rt.clock)
    with rt.db.transaction() as session:
        ask = check_request(session, params, set(vocab.purposes), set(vocab.categories))
        recipient = recipients.find(session, ask.client_id)
    if recipient is None or recipient.status != "active":
        raise AuthorizeError("this service is not registered with the broker, or is suspended")
    return ask


def _give(rt: Runtime, consents: ConsentService, customer: str, given: ConsentAsk) -> str:
    """The customer's consent to ``given``, written; the single-use code bound to it."""
    notice = _notice_text(given)
    now = rt.clock.now()
    with rt.db.transaction() as session:
        appended = consents.give(
            session,
            ConsentRequest(
                customer=customer,
                recipient=given.client_id,
                purposes=(given.purpose,),
                categories=given.categories,
                granularity=given.granularity,
                expires_at=now + timedelta(days=given.days),
                notice_hash=notice_hash(notice.encode()),
                collection_method="oauth_consent_page",
                controller="utility.example",
                history_days=30,
                identified=True,
                explicit=True,
            ),
            f"customer:{rt.hasher(customer)}",
        )
        return issue_code(session, rt.clock, given, customer, appended.event.consent_id)


def _back(ask: ConsentAsk, params: dict[str, str]) -> RedirectResponse:
    if ask.state:
        params = {**params, "state": ask.state}
    return RedirectResponse(f"{ask.redirect_uri}?{urlencode(params)}", status_code=303)


def _notice_text(ask: ConsentAsk) -> str:
    return (
        f"{ask.client_id} may receive your {', '.join(ask.categories)} data "
        f"{PLAIN.get(ask.granularity, ask.granularity)}, for {ask.purpose.replace('_', ' ')}, "
        f"for {ask.days} days. You can withdraw at any time."
    )
