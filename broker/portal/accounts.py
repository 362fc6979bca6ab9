"""Customers' local accounts (the embedded default; an upstream OpenID Connect provider would
replace this in production): argon2id password hashes, a lockout after repeated failures, and
every sign-in, good or bad, in the audit log under the customer's keyed hash."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import insert, select, update
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.errors import BrokerError
from broker.kit.clock import Clock, to_us
from broker.kit.ids import SubjectHasher
from broker.portal.models import CustomerAccount

ACCOUNTS = CustomerAccount.metadata.tables["customer_account"]
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD = 12


class SignInFailed(BrokerError):
    status_code = 401


class AccountError(BrokerError):
    status_code = 422


class Accounts:
    def __init__(self, audit: AuditSink, clock: Clock, hasher: SubjectHasher) -> None:
        self._audit, self._clock, self._hash = audit, clock, hasher
        self._argon = PasswordHasher()
        self._dummy = self._argon.hash("timing equaliser for unknown users")

    def create(
        self, session: Session, username: str, customer_ref: str, password: str, actor: str
    ) -> None:
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
        if not username or len(username) > 64:
            raise AccountError("a username has 1 to 64 characters")
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
                failed_logins=0,
                created_us=to_us(self._clock.now()),
            )
        )
        self._audit.record(
            session, [AuditEvent("customer.account_created", actor, self._hash(customer_ref), {})]
        )

    def sign_in(self, session: Session, username: str, password: str) -> str:
        """The customer reference of a correct sign-in; ``SignInFailed`` otherwise (the same
        message whether the user exists or not). The failure is counted and audited in the
        caller's transaction, which must commit it: use ``attempt``."""
        row = session.execute(select(ACCOUNTS).where(ACCOUNTS.c.username == username)).first()
        now = self._clock.now()
        if row is None:
            self._verify(self._dummy, password)
            raise SignInFailed("wrong username or password")
        subject = self._hash(row.customer_ref)
        if row.locked_until_us is not None and row.locked_until_us > to_us(now):
            self._audit.record(
                session,
                [AuditEvent("customer.login_refused", "customer", subject, {"why": "locked"})],
            )
            raise SignInFailed("too many failed sign-ins; try again later")
        if not self._verify(row.password_hash, password):
            failures = row.failed_logins + 1
            locked = to_us(now + LOCKOUT) if failures >= MAX_FAILURES else None
            session.execute(
                update(ACCOUNTS)
                .where(ACCOUNTS.c.username == username)
                .values(failed_logins=0 if locked else failures, locked_until_us=locked)
            )
            self._audit.record(
                session,
                [
                    AuditEvent(
                        "customer.login_failed", "customer", subject, {"locked": locked is not None}
                    )
                ],
            )
            raise SignInFailed("wrong username or password")
        session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.username == username)
            .values(failed_logins=0, locked_until_us=None)
        )
        self._audit.record(session, [AuditEvent("customer.login", "customer", subject, {})])
        return str(row.customer_ref)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._argon.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def attempt(db_transaction: Any, accounts: Accounts, username: str, password: str) -> str:
    """Sign in, committing the record of a failure before refusing (a refusal raised inside the
    transaction would roll back the failure count, and the lockout would never come)."""
    failure: SignInFailed | None = None
    with db_transaction() as session:
        try:
            return accounts.sign_in(session, username, password)
        except SignInFailed as exc:
            failure = exc
    raise failure
