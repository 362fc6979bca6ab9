"""Customers' local accounts (the embedded default; an upstream OpenID Connect provider would
replace this in production): argon2id password hashes, password changes, and every sign-in,
good or bad, in the audit log under the customer's keyed hash. Wrong passwords are slowed by
``broker.portal.throttle`` (waits that grow, never a lock) before a password is checked."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import insert, select, update
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.customers.errors import AccountError, SignInFailed
from broker.customers.models import CustomerAccount
from broker.customers.store import end_all
from broker.kit.clock import Clock, to_us
from broker.kit.ids import SubjectHasher
from broker.kit.text import text_problem

ACCOUNTS = CustomerAccount.metadata.tables["customer_account"]
MIN_PASSWORD = 12


class Accounts:
    def __init__(self, audit: AuditSink, clock: Clock, hasher: SubjectHasher) -> None:
        self._audit, self._clock, self._hash = audit, clock, hasher
        self._argon = PasswordHasher()
        self._dummy = self._argon.hash("timing equaliser for unknown users")

    def create(
        self, session: Session, username: str, customer_ref: str, password: str, actor: str
    ) -> None:
        _check_new(password)
        if not username or len(username) > 64:
            raise AccountError("a username has 1 to 64 characters")
        problem = text_problem(username, display=True)
        if problem is not None:  # a name the customer types and reads: plain text only
            raise AccountError(f"the username {problem}")
        taken = session.execute(
            select(ACCOUNTS.c.username).where(
                (ACCOUNTS.c.username == username) | (ACCOUNTS.c.customer_ref == customer_ref)
            )
        ).first()
        if taken is not None:
            raise AccountError("that username or customer already has an account")
        session.execute(
            insert(ACCOUNTS).values(
                username=username,
                customer_ref=customer_ref,
                password_hash=self._argon.hash(password),
                created_us=to_us(self._clock.now()),
            )
        )
        self._audit.record(
            session, [AuditEvent("customer.account_created", actor, self._hash(customer_ref), {})]
        )

    def sign_in(self, session: Session, username: str, password: str) -> str:
        """The customer reference of a correct sign-in; ``SignInFailed`` otherwise (the same
        message whether the user exists or not), audited in the caller's transaction, which
        must commit it: run it under ``Throttle.guarded``, which counts the failure too."""
        row = session.execute(select(ACCOUNTS).where(ACCOUNTS.c.username == username)).first()
        if row is None:
            self._verify(self._dummy, password)
            raise SignInFailed("wrong username or password")
        subject = self._hash(row.customer_ref)
        if not self._verify(row.password_hash, password):
            event = AuditEvent("customer.login_failed", "customer", subject, {})
            self._audit.record(session, [event])
            raise SignInFailed("wrong username or password")
        self._audit.record(session, [AuditEvent("customer.login", "customer", subject, {})])
        return str(row.customer_ref)

    def username_of(self, session: Session, customer: str) -> str:
        """The customer's local account; ``AccountError`` if they sign in only elsewhere."""
        username = session.execute(
            select(ACCOUNTS.c.username).where(ACCOUNTS.c.customer_ref == customer)
        ).scalar()
        if username is None:
            raise AccountError("you have no password here: you sign in at your provider")
        return str(username)

    def change_password(self, session: Session, customer: str, current: str, new: str) -> int:
        """Replace the customer's password, given the current one (``SignInFailed`` if wrong,
        audited: run it under ``Throttle.guarded``), and end every session of the customer;
        how many were ended."""
        _check_new(new)
        row = session.execute(select(ACCOUNTS).where(ACCOUNTS.c.customer_ref == customer)).one()
        subject = self._hash(customer)
        if not self._verify(row.password_hash, current):
            why = {"why": "wrong current password"}
            event = AuditEvent("customer.password_change_refused", "customer", subject, why)
            self._audit.record(session, [event])
            raise SignInFailed("the current password is wrong")
        session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.customer_ref == customer)
            .values(password_hash=self._argon.hash(new))
        )
        ended = end_all(session, customer)
        details = {"sessions_ended": ended}
        event = AuditEvent("customer.password_changed", "customer", subject, details)
        self._audit.record(session, [event])
        return ended

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._argon.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def _check_new(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
