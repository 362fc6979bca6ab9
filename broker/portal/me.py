"""The signed-in customer's own pages and API under ``/me`` (X.1332 C2.2): their consents (as
data, and on a page in plain words with a withdraw button each), withdrawal, erasure of their
data, their access history and their own readings of a day.

A customer reaches only their own data: every ``/me`` route takes the customer from the
session, never from the request. Withdrawals and erasure spend the customer's rate
(``PortalRate``); an erasure must be confirmed in words (422 otherwise) and ends every session
of the customer. Pages of access history are at most ``MAX_PAGE`` entries (422 beyond). The
password change, also under ``/me``, is ``broker.portal.password``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from broker.api.schemas import error_responses
from broker.customers.store import end_all
from broker.errors import BrokerError, NotFound
from broker.kit.clock import to_rfc3339
from broker.kit.text import Text
from broker.portal import pages
from broker.portal.parts import COOKIE, PortalParts
from broker.portal.sessions import NotSignedIn
from broker.regulator.service import AuditQuery, audit_entries
from broker.runtime.wiring import erase_customer, open_consents
from broker.storage.guard import MAX_SEQ
from connectors.mdms.models import Meter
from connectors.mdms.readings import StoredDay, read_days

MAX_PAGE = 500


class InvalidForm(BrokerError):
    status_code = 422


def me_router(parts: PortalParts) -> APIRouter:
    router = APIRouter(prefix="/me", tags=["customer"])
    _consent_routes(router, parts)
    _data_routes(router, parts)
    return router


def _consent_routes(router: APIRouter, parts: PortalParts) -> None:
    """``/me/consents``, their withdrawal, and ``/me``, the customer's page."""
    rt = parts.rt
    consents = open_consents(rt)

    @router.get("/consents", summary="Your consents")
    def my_consents(broker_session: Annotated[str | None, Cookie()] = None) -> list[dict[str, Any]]:
        customer = parts.customer_of(broker_session)
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
        responses=error_responses(404, s404="NotFound: you have no such consent") | pages.THROTTLED,
    )
    def withdraw(
        request: Request, consent_id: str, broker_session: Annotated[str | None, Cookie()] = None
    ) -> Response:
        """JSON, or back to ``/me`` for a browser's form (no JavaScript needed)."""
        customer = parts.customer_of(broker_session)
        parts.rate.customer(customer)
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
            customer = parts.customer_of(broker_session)
        except NotSignedIn:
            return RedirectResponse("/login", status_code=303)
        with rt.db.transaction() as session:
            records = [
                r for r in consents.refresh(session).records() if r.terms.customer == customer
            ]
        return pages.home_page(records, rt.clock.now())


def _data_routes(router: APIRouter, parts: PortalParts) -> None:
    """``/me/erase``, ``/me/access`` (the access history) and ``/me/usage`` (readings)."""
    rt = parts.rt

    @router.post(
        "/erase",
        summary="Erase your data: withdraw every consent, tell every recipient, destroy your key",
        responses=error_responses(422, s422="InvalidRequest: confirm is not 'erase my data'")
        | pages.THROTTLED,
    )
    def erase(
        request: Request,
        confirm: Annotated[Text, Form(max_length=64)],
        broker_session: Annotated[str | None, Cookie()] = None,
    ) -> Response:
        """Final: every consent in force is withdrawn, every recipient that received your data
        gets a signed deletion request, and your data key is destroyed, so what the broker
        stored for you can never be read again. Send ``confirm=erase my data``."""
        customer = parts.customer_of(broker_session)
        parts.rate.customer(customer)
        if confirm.strip().lower() != pages.ERASE_CONFIRMATION:
            raise InvalidForm(f"to erase your data, confirm with {pages.ERASE_CONFIRMATION!r}")
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
            response = pages.erased_page(summary)
        response.delete_cookie(COOKIE, secure=True, httponly=True, samesite="lax")
        return response

    @router.get("/access", summary="Who received what, when, why, under which decision")
    def access(
        broker_session: Annotated[str | None, Cookie()] = None,
        after_seq: Annotated[int, Query(ge=-1, le=MAX_SEQ)] = -1,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        customer = parts.customer_of(broker_session)
        query = AuditQuery(subject=rt.hasher(customer), after_seq=after_seq, limit=limit)
        with rt.db.transaction() as session:
            entries, cursor = audit_entries(session, query)
        return {"entries": entries, "next_after_seq": cursor}

    @router.get("/usage", summary="Your own readings of one day")
    def usage(day: date, broker_session: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        customer = parts.customer_of(broker_session)
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


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _plain(days: list[StoredDay]) -> list[dict[str, Any]]:
    """Interval ends and Wh of the stored days, as the customer reads them."""
    return [
        {"end": to_rfc3339(datetime.fromtimestamp(int(end), tz=UTC)), "wh": int(value)}
        for stored in days
        for end, value in zip(stored.readings.end_s, stored.readings.value, strict=True)
    ]
