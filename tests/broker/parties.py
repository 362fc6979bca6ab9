"""Customers and recipients written straight into the tables, for tests whose subject is not
onboarding: a consent must name a customer the broker holds and a registered recipient
(``broker.consent.parties``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session

from broker.customers.models import Customer
from broker.recipients.models import Kind, Recipient, Status


def enrol(session: Session, customers: Iterable[str] = (), recipients: Iterable[str] = ()) -> None:
    """Add rows for ``customers`` and ``recipients`` that are not there yet (no personal data,
    no data keys; recipients active third parties with no purposes)."""
    for ref in customers:
        if session.get(Customer, ref) is None:
            session.add(Customer(customer_ref=ref, subject_hash=f"h:{ref}", created_us=0))
    for name in recipients:
        if session.get(Recipient, name) is None:
            session.add(
                Recipient(
                    recipient_id=name,
                    display_name=name,
                    kind=Kind.third_party.value,
                    purposes="[]",
                    status=Status.active.value,
                    created_us=0,
                    updated_us=0,
                )
            )
    session.flush()
