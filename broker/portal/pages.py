"""The portal's HTML pages: server-rendered, no JavaScript, each sent with ``no-store``, a
strict Content-Security-Policy and no framing.

The page frame (``page``) and the pages built on it: the sign-in form (with a link to the
OpenID provider when there is one), the consent page that lets the customer narrow a request,
the customer's own page (consents, access history, erasure), the page after an erasure, and
the pages for a form over the size limit (413) and for too many requests (429, saying when to
try again). Also how the OpenAPI description names the 413 and 429 pages.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi.responses import HTMLResponse

from broker.api.schemas import RETRY_AFTER
from broker.errors import Throttled
from broker.kit.clock import to_rfc3339
from broker.oauth.grant import ConsentAsk

CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https:"
CSS = "body{font-family:sans-serif;max-width:40em;margin:2em auto;line-height:1.5}"
ERASE_CONFIRMATION = "erase my data"
PLAIN = {
    "15min": "every quarter of an hour",
    "30min": "every half hour",
    "hourly": "every hour",
    "daily": "once a day",
    "monthly": "once a month",
}

_HTML = {"text/html": {"schema": {"type": "string"}}}
TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"description": "PayloadTooLarge: the form is over the limit (a page)", "content": _HTML}
}
THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Throttled: too many requests from this address or account; a page "
        "says when to try again (Retry-After)",
        "headers": RETRY_AFTER,
        "content": _HTML,
    }
}


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
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


def too_large(detail: str) -> HTMLResponse:
    return page("Too much to read", f"<p>{html.escape(detail)}. Go back and try again.</p>", 413)


def wait_page(exc: Throttled) -> HTMLResponse:
    until = datetime.now(UTC) + timedelta(seconds=exc.retry_after_s)
    answer = page(
        "Please wait a moment",
        f"<p>{html.escape(exc.message)}.</p><p>Try again in {exc.retry_after_s} seconds, "
        f"after {until:%H:%M:%S} UTC.</p>",
        429,
    )
    answer.headers.update(exc.headers)
    return answer


def login_form(query: str, provider: str | None) -> HTMLResponse:
    """The password form; with an OpenID provider, a link to sign in there that keeps ``next``."""
    elsewhere = ""
    if provider is not None:
        target = "/oauth/authorize?" + query if query else "/me"
        href = "/login/oidc?next=" + quote(target, safe="")
        elsewhere = (
            f'<p><a href="{html.escape(href)}">Sign in with {html.escape(provider)}</a></p>'
            "<p>or with your password:</p>"
        )
    return page(
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


def consent_page(ask: ConsentAsk, who: str, query: str, token: str) -> HTMLResponse:
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
    return page("Share your energy data?", body)


def home_page(records: list[Any], now: datetime) -> HTMLResponse:
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
    return page(
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


def erased_page(summary: dict[str, Any]) -> HTMLResponse:
    """After an erasure: what ``broker.runtime.wiring.erase_customer`` says it did."""
    told = ", ".join(summary["recipients_notified"]) or "no recipient had received any"
    return page(
        "Your data was erased",
        f"<p>{summary['consents_withdrawn']} consent(s) withdrawn. Deletion requests "
        f"were sent to: {html.escape(told)}. Your key was destroyed: what the broker "
        "stored for you can no longer be read by anyone.</p>",
    )
