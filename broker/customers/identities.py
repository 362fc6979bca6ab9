"""Identities at upstream OpenID Connect providers linked to customers: (issuer, subject) →
customer reference. An operator links them (``broker customers link-identity``); a sign-in at
the provider (``broker.portal.oidc``) finds its customer here."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.customers.errors import IdentityError
from broker.customers.models import CustomerIdentity
from broker.kit.clock import Clock, to_us
from broker.kit.ids import SubjectHasher

IDENTITIES = CustomerIdentity.metadata.tables["customer_identity"]
CUSTOMER_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")


def check_identity(issuer: str, subject: str) -> None:
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise IdentityError("the issuer is the provider's https URL, exactly as in its tokens")
    if not 1 <= len(subject) <= 255 or not subject.isprintable():
        raise IdentityError("the subject has 1 to 255 printable characters")


class Identities:
    """The link table: (issuer, subject) at an OpenID provider → customer reference."""

    def __init__(self, audit: AuditSink, clock: Clock, hasher: SubjectHasher) -> None:
        self._audit, self._clock, self._hash = audit, clock, hasher

    def link(
        self, session: Session, customer_ref: str, issuer: str, subject: str, actor: str
    ) -> bool:
        """Link the identity to the customer; False if it already was. An identity linked to
        another customer is refused (unlink it first)."""
        check_identity(issuer, subject)
        if not CUSTOMER_REF.match(customer_ref):
            raise IdentityError("a customer reference has 1 to 64 letters, digits or ._:@-")
        current = self.customer_of(session, issuer, subject)
        if current == customer_ref:
            return False
        if current is not None:
            raise IdentityError("that identity is linked to another customer; unlink it first")
        session.execute(
            insert(IDENTITIES).values(
                issuer=issuer,
                subject=subject,
                customer_ref=customer_ref,
                linked_us=to_us(self._clock.now()),
            )
        )
        event = AuditEvent(
            "customer.identity_linked", actor, self._hash(customer_ref), {"issuer": issuer}
        )
        self._audit.record(session, [event])
        return True

    def unlink(
        self, session: Session, customer_ref: str, issuer: str, subject: str, actor: str
    ) -> None:
        if self.customer_of(session, issuer, subject) != customer_ref:
            raise IdentityError(f"{customer_ref} has no such identity at {issuer}")
        session.execute(
            delete(IDENTITIES).where(IDENTITIES.c.issuer == issuer, IDENTITIES.c.subject == subject)
        )
        event = AuditEvent(
            "customer.identity_unlinked", actor, self._hash(customer_ref), {"issuer": issuer}
        )
        self._audit.record(session, [event])

    @staticmethod
    def customer_of(session: Session, issuer: str, subject: str) -> str | None:
        row = session.execute(
            select(IDENTITIES.c.customer_ref).where(
                IDENTITIES.c.issuer == issuer, IDENTITIES.c.subject == subject
            )
        ).first()
        return None if row is None else str(row.customer_ref)
