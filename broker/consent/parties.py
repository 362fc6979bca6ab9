"""The parties a new consent names must exist (R3.4, C3.2): a customer the broker holds and a
recipient it registered and has not revoked.

A receipt is the customer's evidence that they consented to a recipient; the broker signs none
for a customer it does not know or a recipient it never onboarded. ``ConsentService`` checks
every ``given`` event here before anything is written, so the command line, the portal and the
demo all meet the same refusal. Modifications keep the customer and recipient of the consent
they change, and withdrawals and expiries must always be possible, so only new consents are
checked. A suspended recipient may still be named (a suspension is lifted or ends in a
revocation); a revoked one may not.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from broker.consent.errors import ConsentRefused
from broker.customers.models import Customer
from broker.recipients.models import Recipient, Status
from consent_ledger import ConsentTerms

_CHUNK = 500
"""References looked up per query (a group of appends names thousands of customers)."""


def check_parties(session: Session, terms: Iterable[ConsentTerms]) -> None:
    """Refuse (``ConsentRefused``) terms naming an unknown customer or recipient, or a revoked
    recipient; the first in the group's order is named."""
    listed = list(terms)
    customers = list(dict.fromkeys(t.customer for t in listed))
    recipients = list(dict.fromkeys(t.recipient for t in listed))
    held: set[str] = set()
    status: dict[str, str] = {}
    for start in range(0, len(customers), _CHUNK):
        chunk = customers[start : start + _CHUNK]
        query = select(Customer.customer_ref).where(col(Customer.customer_ref).in_(chunk))
        held.update(session.exec(query))
    for start in range(0, len(recipients), _CHUNK):
        chunk = recipients[start : start + _CHUNK]
        rows = select(Recipient.recipient_id, Recipient.status).where(
            col(Recipient.recipient_id).in_(chunk)
        )
        status.update((name, state) for name, state in session.exec(rows))
    for t in listed:
        if t.customer not in held:
            raise ConsentRefused(
                f"consent for unknown customer {t.customer!r}: the broker holds no such "
                "customer (broker customers import)"
            )
        if t.recipient not in status:
            raise ConsentRefused(
                f"consent to unregistered recipient {t.recipient!r}: register it first "
                "(broker recipients register)"
            )
        if status[t.recipient] == Status.revoked:
            raise ConsentRefused(f"consent refused: recipient {t.recipient!r} is revoked")
