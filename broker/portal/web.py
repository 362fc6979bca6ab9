"""The customer portal's HTTPS app: sign-in, the consent page, and the customer's own API.

Server-rendered HTML that works without JavaScript. Customers have no client certificates, so
the portal listens on its own TLS endpoint that authenticates the server only; customers
authenticate with their account. Sessions are kept on the server (``broker.portal.sessions``:
sign-out ends one, a password change at ``/me/password`` all of the customer's); the cookie
carries only a sealed random id (HttpOnly, Secure, SameSite=Lax so the redirect from a third
party's site keeps the session; the consent form carries a CSRF token bound to the session).
With ``BROKER_PORTAL_OIDC_ISSUER`` and ``_CLIENT_ID`` set, customers may instead sign in at an
upstream OpenID Connect provider (``broker.portal.oidc``), and get the same kind of session. A
customer reaches only their own data (C2.2): every ``/me`` route takes the customer from the
session, never from the request.

Limits before any work (T7): wrong passwords make an account's, and an address's, next sign-in
wait longer and longer (``broker.portal.throttle``: 429, never a lock); sign-ins have a token
bucket per client address, consent decisions and withdrawals one per signed-in customer
(``BROKER_PORTAL_RATE_PER_S``, ``_BURST``): over it, 429 with Retry-After and a page that says
when to try again. Forms are bounded (``BROKER_PORTAL_MAX_BODY_BYTES``, 413) before more than
the bound is read; pages of access history are at most ``MAX_PAGE`` entries (422 beyond).
Form fields and query parameters with a control character are refused (422). Every answer is
``no-store``, ``nosniff`` and HSTS, a bug answers 500 in the one error shape
(``broker.api.hardening``); the OpenAPI description is not served (``portal_app(rt).openapi()``
builds it), nor are Swagger UI or ReDoc.
"""

from __future__ import annotations

import hmac
import html
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Cookie, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from broker.api.hardening import install_hardening
from broker.api.limits import BodyLimit, ClientRate
from broker.api.schemas import (
    RETRY_AFTER,
    document_error_family,
    error_json,
    error_responses,
    install_error_family,
)
from broker.customers.accounts import Accounts
from broker.customers.errors import AccountError, SignInFailed
from broker.customers.store import end_all
from broker.errors import BrokerError, Forbidden, NotFound, Throttled
from broker.keys.files import ensure_b64_key
from broker.kit.clock import to_rfc3339
from broker.kit.text import Text
from broker.oauth.errors import AuthorizeError
from broker.oauth.grant import ConsentAsk, check_request, issue_code, narrowed
from broker.policy.service import active_vocabulary
from broker.portal.oidc import OidcRefused, oidc_router
from broker.portal.oidc_settings import PortalOidcSettings
from broker.portal.password import password_router
from broker.portal.sessions import CookieSigner, NotSignedIn, PortalSessions
from broker.portal.throttle import DeviceCookies, Throttle, source_of
from broker.recipients.service import Recipients
from broker.regulator.service import AuditQuery, audit_entries
from broker.runtime.core import Runtime
from broker.runtime.wiring import erase_customer, open_consents
from broker.storage.guard import MAX_SEQ
from connectors.mdms.models import Meter
from connectors.mdms.readings import StoredDay, read_days
from consent_ledger import ConsentRequest, notice_hash

COOKIE = "broker_session"
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https:"
ERASE_CONFIRMATION = "erase my data"


class InvalidForm(BrokerError):
    status_code = 422


MAX_PAGE = 500
CSS = "body{font-family:sans-serif;max-width:40em;margin:2em auto;line-height:1.5}"
PLAIN = {
    "15min": "every quarter of an hour",
    "30min": "every half hour",
    "hourly": "every hour",
    "daily": "once a day",
    "monthly": "once a month",
}


def session_key_path(rt: Runtime) -> Path:
    return rt.settings.keys_dir / "portal-session.key"


def _session_key(rt: Runtime) -> bytes:
    return ensure_b64_key(rt.settings, session_key_path(rt))


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": CSP,
        },
    )


def _too_large(detail: str) -> HTMLResponse:
    return _page("Too much to read", f"<p>{html.escape(detail)}. Go back and try again.</p>", 413)


def _wait_page(exc: Throttled) -> HTMLResponse:
    until = datetime.now(UTC) + timedelta(seconds=exc.retry_after_s)
    page = _page(
        "Please wait a moment",
        f"<p>{html.escape(exc.message)}.</p><p>Try again in {exc.retry_after_s} seconds, "
        f"after {until:%H:%M:%S} UTC.</p>",
        429,
    )
    page.headers.update(exc.headers)
    return page


class PortalRate:
    """Token buckets per client address (sign-in) and per customer (decisions, withdrawals)."""

    def __init__(self, rt: Runtime) -> None:
        self._rate = ClientRate(rt.settings.portal_rate_per_s, rt.settings.portal_burst)

    def sign_in(self, request: Request) -> None:
        address = request.client.host if request.client else "unknown"
        self._spend(f"address:{address}", "Too many sign-in attempts from your address")

    def customer(self, customer: str) -> None:
        self._spend(f"customer:{customer}", "Too many requests from your account")

    def _spend(self, key: str, says: str) -> None:
        wait = self._rate.wait(key)
        if wait:
            raise Throttled(says, wait)


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
    cookies = CookieSigner(_session_key(rt))
    accounts = Accounts(rt.audit, rt.clock, rt.hasher)
    consents = open_consents(rt)
    recipients = Recipients(rt.audit, rt.clock)
    rate = PortalRate(rt)
    sessions = PortalSessions(rt.db.transaction, rt.clock, cookies, rt.settings.portal_session_s)
    customer_of = sessions.customer_of
    throttle, devices = Throttle(rt.settings, rt.clock, rt.hasher), DeviceCookies(cookies)

    def csrf(cookie: str, what: str) -> str:
        return cookies.mac("csrf", f"{cookie}|{what}")

    def signed_in(customer: str, target: str) -> Response:
        """The answer to a sign-in, by password or at the OpenID provider: the session."""
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            sessions.start(customer),
            max_age=sessions.lifetime_s,
            secure=True,
            httponly=True,
            samesite="lax",
        )
        return response

    async def _error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BrokerError)
        if isinstance(exc, Throttled):
            return _wait_page(exc)
        if isinstance(exc, OidcRefused):
            notes = "".join(f"<p>{html.escape(note)}</p>" for note in exc.notes)
            body = f"<p>{html.escape(exc.message)}</p>{notes}"
            return _page(exc.title, body, exc.status_code)
        if isinstance(exc, AuthorizeError | SignInFailed | NotSignedIn | AccountError):
            return _page("Cannot continue", f"<p>{html.escape(exc.message)}</p>", exc.status_code)
        return error_json(type(exc).__name__, exc.message, exc.status_code)

    app.add_exception_handler(BrokerError, _error)
    install_error_family(app)
    document_error_family(app)
    app.add_middleware(BodyLimit, max_bytes=rt.settings.portal_max_body_bytes, refuse=_too_large)
    install_hardening(app, rt.settings)  # outermost: headers, control characters, bugs

    def ask_of(params: dict[str, str]) -> ConsentAsk:
        vocab = active_vocabulary(rt.settings, rt.audit, rt.clock)
        with rt.db.transaction() as session:
            ask = check_request(session, params, set(vocab.purposes), set(vocab.categories))
            recipient = recipients.find(session, ask.client_id)
        if recipient is None or recipient.status != "active":
            raise AuthorizeError("this service is not registered with the broker, or is suspended")
        return ask

    @app.get(
        "/oauth/authorize", response_class=HTMLResponse, summary="Consent request (OAuth 2.0, PKCE)"
    )
    def authorize(
        request: Request, broker_session: Annotated[str | None, Cookie()] = None
    ) -> Response:
        params = dict(request.query_params)
        ask = ask_of(params)
        try:
            customer = customer_of(broker_session)
        except NotSignedIn:
            return _login_form(urlencode(params), oidc.label if oidc.enabled else None)
        assert broker_session is not None
        with rt.db.transaction() as session:
            recipient = recipients.get(session, ask.client_id)
        return _consent_page(
            ask,
            recipient.display_name,
            customer,
            urlencode(params),
            csrf(broker_session, urlencode(params)),
        )

    @app.get("/login", response_class=HTMLResponse, summary="The sign-in form")
    def login_form() -> HTMLResponse:
        return _login_form("", oidc.label if oidc.enabled else None)

    @app.post(
        "/login",
        response_class=HTMLResponse,
        summary="Sign in",
        responses=_TOO_LARGE | _THROTTLED,
    )
    def login(
        request: Request,
        username: Annotated[Text, Form()],
        password: Annotated[Text, Form()],
        next: Annotated[Text, Form()] = "",
        broker_device: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        rate.sign_in(request)
        device = devices.of(broker_device, username)
        customer = throttle.guarded(
            rt.db.transaction,
            username,
            source_of(request),
            lambda session: accounts.sign_in(session, username, password),
            device,
        )
        response = signed_in(customer, "/oauth/authorize?" + next if next else "/me")
        devices.remember(response, username, device)
        return response

    @app.post(
        "/oauth/authorize/decision",
        summary="Approve, narrow or deny a consent request",
        responses=_TOO_LARGE | _THROTTLED,
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
        customer = customer_of(broker_session)
        assert broker_session is not None
        rate.customer(customer)
        if not hmac.compare_digest(csrf(broker_session, query).encode(), token.encode()):
            raise Forbidden("the form is stale or not ours; start again")
        params = dict(parse_qsl(query))
        ask = ask_of(params)
        if action != "approve":
            return _back(ask, {"error": "access_denied"})
        given = narrowed(ask, categories or [], granularity, days)
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
            code = issue_code(session, rt.clock, given, customer, appended.event.consent_id)
        return _back(given, {"code": code})

    @app.post("/logout", summary="Sign out: the session ends on the server")
    def logout(broker_session: Annotated[str | None, Cookie()] = None) -> Response:
        sessions.end(broker_session)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    app.include_router(_me_router(rt, customer_of, csrf, rate))
    app.include_router(password_router(rt, sessions, throttle, devices, csrf, _page, signed_in))
    if oidc.enabled:
        app.include_router(oidc_router(rt, oidc, cookies, signed_in, rate.sign_in))
    return app


_HTML = {"text/html": {"schema": {"type": "string"}}}
_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"description": "PayloadTooLarge: the form is over the limit (a page)", "content": _HTML}
}
_THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Throttled: too many requests from this address or account; a page "
        "says when to try again (Retry-After)",
        "headers": RETRY_AFTER,
        "content": _HTML,
    }
}


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


def _login_form(query: str, provider: str | None) -> HTMLResponse:
    """The password form; with an OpenID provider, a link to sign in there that keeps ``next``."""
    elsewhere = ""
    if provider is not None:
        target = "/oauth/authorize?" + query if query else "/me"
        href = "/login/oidc?next=" + quote(target, safe="")
        elsewhere = (
            f'<p><a href="{html.escape(href)}">Sign in with {html.escape(provider)}</a></p>'
            "<p>or with your password:</p>"
        )
    return _page(
        "Sign in to your energy account",
        (
            elsewhere + "<form method=post action=/login>"
            "<p><label>Username <input name=username autocomplete=username required></label></p>"
            "<p><label>Password <input name=password type=password"
            " autocomplete=current-password required></label></p>"
            f'<input type=hidden name=next value="{html.escape(query)}">'
            "<p><button>Sign in</button></p></form>"
        ),
    )


def _consent_page(ask: ConsentAsk, who: str, customer: str, query: str, token: str) -> HTMLResponse:
    boxes = "".join(
        f"<li><label><input type=checkbox name=categories value={html.escape(c)} checked> "
        f"{html.escape(c.replace('_', ' '))}</label></li>"
        for c in ask.categories
    )
    options = "".join(
        f"<option value={g}{' selected' if g == ask.granularity else ''}>{PLAIN[g]}</option>"
        for g in ("15min", "30min", "hourly", "daily", "monthly")
        if list(PLAIN).index(g) >= list(PLAIN).index(ask.granularity)
    )
    body = (
        f"<p><strong>{html.escape(who)}</strong> asks to receive data from your smart meter.</p>"
        f"<p><strong>For what:</strong> {html.escape(ask.purpose.replace('_', ' '))}.</p>"
        f"<form method=post action=/oauth/authorize/decision>"
        f"<p><strong>What:</strong></p><ul>{boxes}</ul>"
        f"<p><strong>How fine:</strong> <select name=granularity>{options}</select></p>"
        f"<p><strong>How long:</strong> <input name=days type=number min=1"
        f" max={ask.days} value={ask.days}> days"
        f" (you can withdraw at any time).</p>"
        f"<p>It is your data: the service gets nothing else, and you can see who received what.</p>"
        f'<input type=hidden name=query value="{html.escape(query)}">'
        f'<input type=hidden name=token value="{html.escape(token)}">'
        f"<p><button name=action value=approve>Allow</button> "
        f"<button name=action value=deny>Deny</button></p></form>"
    )
    del customer
    return _page("Share your energy data?", body)


def _me_router(rt: Runtime, customer_of: Any, csrf: Any, rate: PortalRate) -> APIRouter:
    router = APIRouter(prefix="/me", tags=["customer"])
    consents = open_consents(rt)

    @router.get("/consents", summary="Your consents")
    def my_consents(broker_session: Annotated[str | None, Cookie()] = None) -> list[dict[str, Any]]:
        customer = customer_of(broker_session)
        with rt.db.transaction() as session:
            state = consents.refresh(session)
            now = rt.clock.now()
            return [
                {
                    "consent_id": r.terms.consent_id,
                    "recipient": r.terms.recipient,
                    "purposes": list(r.terms.purposes),
                    "categories": list(r.terms.categories),
                    "granularity": r.terms.granularity,
                    "expires_at": to_rfc3339(r.terms.expires_at),
                    "status": str(r.status),
                    "in_force": str(r.status) == "active" and now < r.terms.expires_at,
                }
                for r in state.records()
                if r.terms.customer == customer
            ]

    @router.post(
        "/consents/{consent_id}/withdraw",
        summary="Withdraw a consent (effective at once)",
        responses=error_responses(404, s404="NotFound: you have no such consent") | _THROTTLED,
    )
    def withdraw(
        request: Request, consent_id: str, broker_session: Annotated[str | None, Cookie()] = None
    ) -> Response:
        """JSON, or back to ``/me`` for a browser's form (no JavaScript needed)."""
        customer = customer_of(broker_session)
        rate.customer(customer)
        with rt.db.transaction() as session:
            record = consents.refresh(session).get(consent_id)
            if record is None or record.terms.customer != customer:
                raise NotFound(f"you have no consent {consent_id}")
            consents.withdraw(session, consent_id, f"customer:{rt.hasher(customer)}")
        if _wants_html(request):
            return RedirectResponse("/me", status_code=303)
        return JSONResponse({"consent_id": consent_id, "status": "withdrawn"})

    @router.get("", response_class=HTMLResponse, summary="Your page (HTML, no JavaScript)")
    def home(broker_session: Annotated[str | None, Cookie()] = None) -> Response:
        """Your consents in plain words, each with a withdraw button; your access history; and
        erasure. Not signed in: to the sign-in form."""
        try:
            customer = customer_of(broker_session)
        except NotSignedIn:
            return RedirectResponse("/login", status_code=303)
        with rt.db.transaction() as session:
            records = [
                r for r in consents.refresh(session).records() if r.terms.customer == customer
            ]
        return _home_page(records, rt.clock.now())

    @router.post(
        "/erase",
        summary="Erase your data: withdraw every consent, tell every recipient, destroy your key",
        responses=error_responses(422, s422="InvalidRequest: confirm is not 'erase my data'")
        | _THROTTLED,
    )
    def erase(
        request: Request,
        confirm: Annotated[Text, Form(max_length=64)],
        broker_session: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        """Final: every consent in force is withdrawn, every recipient that received your data
        gets a signed deletion request, and your data key is destroyed, so what the broker
        stored for you can never be read again. Send ``confirm=erase my data``."""
        customer = customer_of(broker_session)
        rate.customer(customer)
        if confirm.strip().lower() != ERASE_CONFIRMATION:
            raise InvalidForm(f"to erase your data, confirm with {ERASE_CONFIRMATION!r}")
        actor = f"customer:{rt.hasher(customer)}"
        summary = erase_customer(rt, customer, actor, "the customer's erasure request (portal)")
        with rt.db.transaction() as session:
            end_all(session, customer)
        body = {
            "erased": True,
            "consents_withdrawn": summary["consents_withdrawn"],
            "recipients_notified": summary["recipients_notified"],
            "data_keys_destroyed": summary["data_keys_destroyed"],
        }
        response: Response = JSONResponse(body)
        if _wants_html(request):
            told = ", ".join(summary["recipients_notified"]) or "no recipient had received any"
            response = _page(
                "Your data was erased",
                f"<p>{summary['consents_withdrawn']} consent(s) withdrawn. Deletion requests "
                f"were sent to: {html.escape(told)}. Your key was destroyed: what the broker "
                "stored for you can no longer be read by anyone.</p>",
            )
        response.delete_cookie(COOKIE, secure=True, httponly=True, samesite="lax")
        return response

    @router.get("/access", summary="Who received what, when, why, under which decision")
    def access(
        broker_session: Annotated[str | None, Cookie()] = None,
        after_seq: Annotated[int, Query(ge=-1, le=MAX_SEQ)] = -1,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        customer = customer_of(broker_session)
        query = AuditQuery(subject=rt.hasher(customer), after_seq=after_seq, limit=limit)
        with rt.db.transaction() as session:
            entries, cursor = audit_entries(session, query)
        return {"entries": entries, "next_after_seq": cursor}

    @router.get("/usage", summary="Your own readings of one day")
    def usage(day: date, broker_session: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        customer = customer_of(broker_session)
        table = Meter.metadata.tables["meter"]
        number = (day - date(1970, 1, 1)).days
        with rt.db.transaction() as session:
            meters = [
                m
                for (m,) in session.execute(
                    select(table.c.meter_id).where(table.c.customer_ref == customer)
                )
            ]
            days = {m: read_days(session, rt.data_keys, m, number, number) for m in meters}
        return {"day": day.isoformat(), "meters": {m: _plain(d) for m, d in days.items()}}

    del csrf
    return router


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _home_page(records: list[Any], now: datetime) -> HTMLResponse:
    rows = []
    for r in records:
        t = r.terms
        live = str(r.status) == "active" and now < t.expires_at
        button = (
            f'<form method=post action="/me/consents/{html.escape(t.consent_id)}/withdraw">'
            "<button>Withdraw</button></form>"
            if live
            else html.escape(str(r.status))
        )
        rows.append(
            f"<tr><td>{html.escape(t.recipient)}</td>"
            f"<td>{html.escape(', '.join(p.replace('_', ' ') for p in t.purposes))}</td>"
            f"<td>{html.escape(', '.join(c.replace('_', ' ') for c in t.categories))}</td>"
            f"<td>{html.escape(t.granularity)}</td>"
            f"<td>{html.escape(to_rfc3339(t.expires_at)[:10])}</td><td>{button}</td></tr>"
        )
    table = (
        "<table><tr><th>who</th><th>for what</th><th>what</th><th>how fine</th>"
        "<th>until</th><th></th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p>You have given no consent.</p>"
    )
    return _page(
        "Your energy data",
        "<h2>Who may receive your data</h2>" + table + "<p>A withdrawal takes effect at once: "
        "the next request is refused and the recipient is asked to delete what it received."
        "</p><h2>Who received what</h2><p><a href=/me/access>Your access history</a> "
        "(every release and its decision) and <a href=/me/consents>your consents</a> as data."
        "</p><h2>Erase your data</h2><form method=post action=/me/erase><p><label>Type "
        f"<b>{ERASE_CONFIRMATION}</b> <input name=confirm required></label> "
        "<button>Erase</button></p></form><p>This cannot be undone.</p>"
        "<form method=post action=/logout><button>Sign out</button></form>",
    )


def _plain(days: list[StoredDay]) -> list[dict[str, Any]]:
    """Interval ends and Wh of the stored days, as the customer reads them."""
    return [
        {"end": to_rfc3339(datetime.fromtimestamp(int(end), tz=UTC)), "wh": int(value)}
        for stored in days
        for end, value in zip(stored.readings.end_s, stored.readings.value, strict=True)
    ]
