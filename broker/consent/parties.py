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

from sqlmodel import Session, select

from broker.consent.errors import ConsentRefused
from broker.recipients.models import Recipient, Status
from connectors.mdms.models import Customer
from consent_ledger import ConsentTerms


def check_parties(session: Session, terms: Iterable[ConsentTerms]) -> None:
    """Refuse (``ConsentRefused``) terms naming an unknown customer or recipient."""
    for t in terms:
        known = select(Customer.customer_ref).where(Customer.customer_ref == t.customer)
        if session.exec(known).first() is None:
            raise ConsentRefused(
                f"consent for unknown customer {t.customer!r}: the broker holds no such "
                "customer (broker customers import)"
            )
        status = session.exec(
            select(Recipient.status).where(Recipient.recipient_id == t.recipient)
        ).first()
        if status is None:
            raise ConsentRefused(
                f"consent to unregistered recipient {t.recipient!r}: register it first "
                "(broker recipients register)"
            )
        if status == Status.revoked:
            raise ConsentRefused(f"consent refused: recipient {t.recipient!r} is revoked")
