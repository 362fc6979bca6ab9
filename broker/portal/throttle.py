"""Sign-in throttling on the portal (X.1332 T7, C2.2): wrong passwords slow an account, and a
client address, but never lock either.

Each account (by the name typed, whether it exists or not, so the answers tell nothing about
which do) and each client address keeps a count of wrong passwords in the database
(``portal_throttle``, keyed by the keyed hash of the name or address, never the name or
address; every portal process shares it). The first ``BROKER_PORTAL_SIGNIN_FREE_FAILURES`` of
an account (``_SOURCE_FREE_FAILURES`` of an address) cost nothing; after them each attempt must
wait ``_DELAY_S``, doubled by every further wrong password, up to ``_MAX_DELAY_S``. An attempt
during a wait is answered 429 with Retry-After and a page that says why and for how long, and
its password is not checked: it cannot guess faster, and a wrong one does not lengthen the
wait. After the wait the right password always signs in and clears the account's count, so a
stranger who knows a customer's name can slow them but not lock them out. A success does not
clear an address's count (someone with an account of their own could clear it between guesses
at others'); a count is forgotten a day after its last wrong password. A browser the customer
signed in from before carries a device cookie (``DeviceCookies``): its sign-ins for that
account are counted on their own, so even a stranger who times a wrong password to the end of
every wait cannot keep the customer out of it.

The attempt that may go ahead claims the next wait before the password is checked, in the same
transaction, with a conditional update: concurrent attempts at the end of a wait cannot all
slip through (on PostgreSQL the second waits for the first's row lock, then sees the wait;
SQLite has one writer at a time). A success gives the claim back.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.customers.errors import SignInFailed
from broker.customers.models import SignInFailures
from broker.errors import Throttled
from broker.kit.clock import Clock, to_us
from broker.kit.ids import SubjectHasher
from broker.portal.sessions import CookieSigner, Transaction
from broker.settings import Settings

FAILURES = SignInFailures.metadata.tables["portal_throttle"]
FORGET_US = int(timedelta(days=1) / timedelta(microseconds=1))
DEVICE_COOKIE = "broker_device"
DEVICE_PURPOSE = "device"
DEVICE_S = 180 * 86_400
ACCOUNT_WAIT = "Too many wrong passwords for this account"
SOURCE_WAIT = "Too many wrong passwords from your address"
T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    """How many wrong passwords are free, and the waits after them."""

    free_failures: int
    delay_s: float
    max_delay_s: float
    says: str

    def wait_us(self, failures: int) -> int:
        """The wait after ``failures`` wrong passwords in a row."""
        if failures < self.free_failures:
            return 0
        doublings = min(failures - self.free_failures, 40)
        return int(min(self.delay_s * 2**doublings, self.max_delay_s) * 1_000_000)


def source_of(request: Request) -> str:
    """The client address of a request (the connection's: the portal trusts no proxy header)."""
    return request.client.host if request.client else "unknown"


class Throttle:
    """The sign-in throttle of one portal (the state is the database's)."""

    def __init__(self, settings: Settings, clock: Clock, hasher: SubjectHasher) -> None:
        self._clock, self._hash = clock, hasher
        delay, cap = settings.portal_signin_delay_s, settings.portal_signin_max_delay_s
        self._account = Policy(settings.portal_signin_free_failures, delay, cap, ACCOUNT_WAIT)
        self._source = Policy(settings.portal_signin_source_free_failures, delay, cap, SOURCE_WAIT)

    def guarded(
        self,
        db: Transaction,
        username: str,
        source: str,
        check: Callable[[Session], T],
        device: str | None = None,
    ) -> T:
        """``check(session)`` (which raises ``SignInFailed`` for a wrong password) once the
        account and the address need not wait (``Throttled`` otherwise, the password
        unchecked). A wrong password is counted, and committed with what ``check`` recorded,
        before ``SignInFailed`` is raised; a right one clears the account's count. From a
        browser the account signed in from before (``device``, see ``DeviceCookies``) only
        that browser's own count applies, as an account's."""
        keys = [(f"source:{self._hash(source)}", self._source)]
        keys.append((f"account:{self._hash('portal-signin:' + username)}", self._account))
        if device is not None:
            keys = [(f"device:{self._hash('portal-device:' + device)}", self._account)]
        failure: SignInFailed | None = None
        with db() as session:
            now = to_us(self._clock.now())
            for key, policy in keys:
                self._claim(session, key, policy, now)
            try:
                result = check(session)
            except SignInFailed as exc:
                failure = exc
                for key, policy in keys:
                    self._count(session, key, policy, now)
                session.execute(
                    delete(FAILURES).where(FAILURES.c.last_failure_us < now - FORGET_US)
                )
            else:
                session.execute(delete(FAILURES).where(FAILURES.c.key == keys[-1][0]))
                for key, _ in keys[:-1]:  # the address's count stays; its claim is given back
                    session.execute(
                        update(FAILURES)
                        .where((FAILURES.c.key == key) & (FAILURES.c.wait_until_us > now))
                        .values(wait_until_us=now)
                    )
                return result
        raise failure

    def _claim(self, session: Session, key: str, policy: Policy, now: int) -> None:
        row = session.execute(select(FAILURES).where(FAILURES.c.key == key)).first()
        if row is None:
            return
        if row.wait_until_us > now:
            raise Throttled(policy.says, math.ceil((row.wait_until_us - now) / 1_000_000))
        wait = policy.wait_us(_recent(row.failures, row.last_failure_us, now) + 1)
        if wait:
            claimed = session.execute(
                update(FAILURES)
                .where((FAILURES.c.key == key) & (FAILURES.c.wait_until_us <= now))
                .values(wait_until_us=now + wait)
            )
            if cast("CursorResult[Any]", claimed).rowcount != 1:
                # a concurrent attempt claimed it first (its row lock held this one back)
                raise Throttled(policy.says, math.ceil(wait / 1_000_000))

    def _count(self, session: Session, key: str, policy: Policy, now: int) -> None:
        row = session.execute(select(FAILURES).where(FAILURES.c.key == key)).first()
        failures = 1 + (_recent(row.failures, row.last_failure_us, now) if row else 0)
        values = {"failures": failures, "wait_until_us": now + policy.wait_us(failures)}
        values["last_failure_us"] = now
        if row is not None:
            session.execute(update(FAILURES).where(FAILURES.c.key == key).values(**values))
            return
        try:
            with session.begin_nested():
                session.execute(insert(FAILURES).values(key=key, **values))
        except IntegrityError:  # a concurrent failure made the row: count on it
            self._count(session, key, policy, now)


def _recent(failures: int, last_failure_us: int, now: int) -> int:
    """The count, unless its last wrong password is a day old (then forgotten)."""
    return failures if last_failure_us >= now - FORGET_US else 0


class DeviceCookies:
    """Browsers an account signed in from before (OWASP's device cookies): after a right
    password the browser keeps ``broker_device``, the account's name and a random id sealed with
    the portal's key (HttpOnly, Secure, SameSite=Strict, ``DEVICE_S``). A sign-in from it, for
    that name, is counted on its own, so a stranger's wrong passwords for the account, or from
    its address, never make it wait; a stranger cannot get one without the password."""

    def __init__(self, cookies: CookieSigner) -> None:
        self._cookies = cookies

    def of(self, cookie: str | None, username: str) -> str | None:
        """The browser's id, if its cookie is this portal's and names ``username``."""
        opened = self._cookies.open(DEVICE_PURPOSE, cookie)
        if opened is None:
            return None
        name, _, device = opened.rpartition("\n")
        return device if device and name == username else None

    def remember(self, response: Response, username: str, device: str | None) -> None:
        """Give (or renew) the browser its cookie after a right password."""
        payload = f"{username}\n{device or secrets.token_urlsafe(16)}"
        response.set_cookie(
            DEVICE_COOKIE,
            self._cookies.seal(DEVICE_PURPOSE, payload, DEVICE_S),
            max_age=DEVICE_S,
            secure=True,
            httponly=True,
            samesite="strict",
        )
