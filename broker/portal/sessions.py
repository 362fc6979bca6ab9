"""Portal sessions kept on the server (X.1332 C2.2), so that signing out ends them.

The session cookie carries a random id sealed with the portal's session key (a forged or
expired cookie is refused without a database read); the database keeps only the SHA-256 of the
id (a database reader cannot present one), the customer and when the session ends
(``BROKER_PORTAL_SESSION_S`` from sign-in). A request is signed in only while that row exists:
sign-out deletes it, so a copy of the cookie kept from before is worth nothing; a password
change, and an erasure, delete every row of the customer. Rows past their end are deleted at
the next sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import delete, insert, select
from sqlmodel import Session

from broker.customers.models import PortalSession
from broker.errors import BrokerError
from broker.kit.clock import Clock, to_us

SESSIONS = PortalSession.metadata.tables["portal_session"]
PURPOSE = "session"
Transaction = Callable[[], AbstractContextManager[Session]]


class NotSignedIn(BrokerError):
    status_code = 401


class CookieSigner:
    """HMAC-SHA256 with the portal's session key over a purpose and a payload: the session
    cookie, its CSRF tokens and the OpenID sign-in's state cookie, each under its own purpose so
    that one is never taken for another."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\n{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def seal(self, purpose: str, payload: str, ttl_s: int) -> str:
        """``payload`` readable, signed, and valid for ``ttl_s`` seconds."""
        body = f"{payload}|{int(time.time()) + ttl_s}"
        return base64.urlsafe_b64encode(body.encode()).decode() + "." + self.mac(purpose, body)

    def open(self, purpose: str, sealed: str | None) -> str | None:
        """The payload of a cookie this portal sealed for ``purpose`` and that has not expired;
        None for anything else."""
        if not sealed or "." not in sealed:
            return None
        encoded, mac = sealed.rsplit(".", 1)
        try:
            body = base64.urlsafe_b64decode(encoded.encode()).decode()
            payload, expires = body.rsplit("|", 1)
            fresh = int(expires) >= time.time()
        except (ValueError, UnicodeDecodeError):
            return None
        same = hmac.compare_digest(self.mac(purpose, body).encode(), mac.encode())  # any text
        return payload if same and fresh else None


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class PortalSessions:
    """Sessions of signed-in customers: the cookie's value for a new one, the customer of a
    cookie while its session lasts, and their end."""

    def __init__(
        self, db: Transaction, clock: Clock, cookies: CookieSigner, lifetime_s: int
    ) -> None:
        self._db, self._clock, self._cookies = db, clock, cookies
        self.lifetime_s = lifetime_s

    def start(self, customer: str) -> str:
        """A new session of ``customer``: the value of its cookie."""
        session_id = secrets.token_urlsafe(32)
        now = to_us(self._clock.now())
        with self._db() as session:
            session.execute(delete(SESSIONS).where(SESSIONS.c.expires_us <= now))
            session.execute(
                insert(SESSIONS).values(
                    id_hash=_digest(session_id),
                    customer_ref=customer,
                    created_us=now,
                    expires_us=now + self.lifetime_s * 1_000_000,
                )
            )
        return self._cookies.seal(PURPOSE, session_id, self.lifetime_s)

    def customer_of(self, cookie: str | None) -> str:
        """The customer of a live session; ``NotSignedIn`` for no cookie, a forged or expired
        one, or one whose session was ended (signed out, password changed)."""
        if not cookie:
            raise NotSignedIn("sign in first")
        session_id = self._cookies.open(PURPOSE, cookie)
        if session_id is not None:
            now = to_us(self._clock.now())
            with self._db() as session:
                customer = session.execute(
                    select(SESSIONS.c.customer_ref).where(
                        (SESSIONS.c.id_hash == _digest(session_id)) & (SESSIONS.c.expires_us > now)
                    )
                ).scalar()
            if customer is not None:
                return str(customer)
        raise NotSignedIn("your session has ended; sign in again")

    def end(self, cookie: str | None) -> None:
        """Sign-out: the cookie's session ends (nothing for a cookie that names none)."""
        session_id = self._cookies.open(PURPOSE, cookie)
        if session_id is not None:
            with self._db() as session:
                session.execute(delete(SESSIONS).where(SESSIONS.c.id_hash == _digest(session_id)))
