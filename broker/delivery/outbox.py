"""The push outbox and its worker: webhooks over mutual TLS, signed, retried, dead-lettered.

``Outbox.enqueue`` stores a body to push in the caller's transaction (so a release and its
delivery commit together): sealed under a data key, the customer's own for a subject feed.
``Outbox.run_due`` takes the deliveries that are due, claims them (a lease, ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so two workers do not post the same one at once), and posts each
outside any transaction:

- over TLS 1.3 presenting the broker's client certificate, the recipient's server verified
  against ``BROKER_PUSH_CA_FILE`` (or the system's trust store);
- only to an address the egress policy admits (``broker.recipients.egress``), checked at every
  connection and pinned for it; a refused host is a dead letter at once, saying why;
- signed with HTTP Message Signatures (RFC 9421, ``broker.delivery.signing``), the nonce being
  ``<delivery id>.<attempt>``, with ``X-Delivery-Id`` so a recipient can drop duplicates (the
  delivery is at-least-once); ``created`` is the wall-clock time of the attempt, as for the
  TLS handshake, whatever clock the broker's records run on;
- a 2xx answer delivers it: the delivery receipt is the row (time, status, attempts, body
  digest) and a ``delivery.delivered`` audit entry; when the answer carries ``{"receipt":
  <JWS>}`` signed with a key the recipient registered over ``{"delivery_id", "body_sha256"}``,
  it is verified and kept;
- 408, 425, 429, 5xx and transport errors are retried after an exponential backoff with equal
  jitter: the ceiling ``base * 2**(n-1)`` (capped), the delay uniform in [ceiling/2, ceiling],
  or the recipient's Retry-After if longer (capped too); any other answer, or the last
  attempt, makes it a dead letter (``delivery.dead_lettered``). ``redrive`` puts a dead letter
  back in the queue;
- a body whose data key was destroyed (the customer was erased) is never sent: it becomes a
  dead letter with the reason ``crypto-shredded``.
"""

from __future__ import annotations

import hashlib
import json
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.delivery.errors import BadSignature, NotRedrivable
from broker.delivery.models import Delivery, DeliveryStatus
from broker.delivery.settings import PushSettings
from broker.delivery.signing import RELEASE_HEADER, sign_push, verify_json_by_any
from broker.errors import BrokerError, NotFound
from broker.keys.service import DataKeys
from broker.kit.clock import Clock, from_us, to_us
from broker.kit.envelope import EnvelopeError
from broker.kit.ids import SubjectHasher, new_id
from broker.recipients.egress import NO_PRIVATE, Egress, pinned_client
from broker.recipients.errors import EgressRefused
from broker.recipients.service import keys_of
from broker.storage.db import Database, is_postgres

OUTBOX_SUBJECT = "broker:outbox"
"""Bodies that hold no customer's data (aggregates, deletion requests) are sealed under this
subject's data key."""
RETRYABLE = frozenset({408, 425, 429})
RECEIPT_TYPE = "x1332-delivery-receipt+jws"


def push_client_context(ca_file: Path | None, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.3, the broker's certificate as client certificate, the webhook's server certificate
    checked against ``ca_file`` (or the system's trust store) and its host name."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def _context(delivery_id: str) -> bytes:
    return f"delivery|{delivery_id}".encode()


def backoff_s(attempts: int, settings: PushSettings, rng: random.Random) -> float:
    """Delay after the ``attempts``-th failed attempt: exponential with equal jitter."""
    ceiling = min(settings.backoff_cap_s, settings.backoff_base_s * 2 ** (attempts - 1))
    return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    recipient: str
    url: str
    kind: str
    media_type: str
    body: bytes | None
    """None: the body could not be opened (its data key was destroyed)."""
    body_sha256: str
    attempt: int
    release_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    status: int | None
    error: str | None
    retry_after_s: float | None = None
    receipt: str | None = None
    final: bool = False
    """Not worth retrying whatever the status (the connection was refused by egress policy)."""


Poster = Callable[[Claimed, dict[str, str]], Outcome]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class HttpPoster:
    """Posts a claimed delivery with httpx over one keep-alive client per worker; every
    connection goes only where ``egress`` admits (``broker.recipients.egress``: resolved,
    checked and pinned), so a refused webhook host becomes a dead letter saying why."""

    def __init__(
        self, ctx: ssl.SSLContext, settings: PushSettings, egress: Egress = NO_PRIVATE
    ) -> None:
        self._client = pinned_client(ctx, egress, settings.timeout_s)
        self._limit = settings.max_response_bytes

    def __call__(self, item: Claimed, headers: dict[str, str]) -> Outcome:
        assert item.body is not None
        try:
            with self._client.stream("POST", item.url, content=item.body, headers=headers) as r:
                answer = b""
                for chunk in r.iter_bytes():
                    answer += chunk
                    if len(answer) > self._limit:
                        break
        except EgressRefused as exc:
            return Outcome(None, f"refused by egress policy: {exc.message}"[:500], final=True)
        except httpx.InvalidURL as exc:  # a row stored before registration checked it
            return Outcome(None, f"refused: not a usable URL: {exc}"[:500], final=True)
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
        receipt = None
        if r.is_success and answer.startswith(b"{"):
            try:
                found = json.loads(answer).get("receipt")
            except (ValueError, AttributeError):
                found = None
            receipt = found if isinstance(found, str) and len(found) < 8192 else None
        error = None if r.is_success else f"HTTP {r.status_code}: {answer[:200]!r}"
        return Outcome(r.status_code, error, _retry_after(r.headers.get("retry-after")), receipt)

    def close(self) -> None:
        self._client.close()


class Outbox:
    def __init__(
        self,
        db: Database,
        data_keys: DataKeys,
        audit: AuditSink,
        clock: Clock,
        hasher: SubjectHasher,
        settings: PushSettings,
        signing_key: Ed25519PrivateKey,
    ) -> None:
        self.db = db
        self._keys = data_keys
        self._audit = audit
        self._clock = clock
        self._hash = hasher
        self.settings = settings
        self._signing_key = signing_key

    # ---- queueing -------------------------------------------------------------------------

    def enqueue(
        self,
        session: Session,
        *,
        recipient: str,
        url: str,
        kind: str,
        body: bytes,
        media_type: str,
        subject: str | None = None,
        feed_id: str | None = None,
        release_id: str | None = None,
        deletion_id: str | None = None,
    ) -> str:
        """Queue ``body`` for ``url`` in the caller's transaction; returns the delivery id."""
        delivery_id = new_id("dl")
        ref = self._keys.current_ref(session, subject or OUTBOX_SUBJECT)
        sealed = self._keys.keyring(session).seal(ref, body, _context(delivery_id))
        now = to_us(self._clock.now())
        session.add(
            Delivery(
                delivery_id=delivery_id,
                recipient=recipient,
                kind=kind,
                url=url,
                feed_id=feed_id,
                release_id=release_id,
                deletion_id=deletion_id,
                media_type=media_type,
                body_sealed=sealed,
                body_sha256=hashlib.sha256(body).hexdigest(),
                status=DeliveryStatus.pending,
                attempts=0,
                next_attempt_us=now,
                created_us=now,
            )
        )
        session.flush()
        return delivery_id

    # ---- the worker -----------------------------------------------------------------------

    def _claim(self) -> list[Claimed]:
        now = to_us(self._clock.now())
        # the lease outlasts the whole round: every claimed item may take its full timeout
        # (connect and read) before the last one is posted
        lease = int(((self.settings.timeout_s * 2 + 1) * self.settings.batch + 5) * 1_000_000)
        query = (
            select(Delivery)
            .where(col(Delivery.status) == DeliveryStatus.pending)
            .where(col(Delivery.next_attempt_us) <= now)
            .order_by(col(Delivery.next_attempt_us))
            .limit(self.settings.batch)
        )
        claimed: list[Claimed] = []
        with self.db.transaction() as session:
            if is_postgres(self.db.engine):
                query = query.with_for_update(skip_locked=True)
            rows = session.exec(query).all()
            ring = self._keys.keyring(session)
            for row in rows:
                try:
                    body: bytes | None = ring.open(row.body_sealed, _context(row.delivery_id))
                except (EnvelopeError, BrokerError):  # destroyed key: crypto-shredded
                    body = None
                row.attempts += 1
                row.next_attempt_us = now + lease  # another worker leaves it alone meanwhile
                session.add(row)
                claimed.append(
                    Claimed(
                        row.delivery_id,
                        row.recipient,
                        row.url,
                        row.kind,
                        row.media_type,
                        body,
                        row.body_sha256,
                        row.attempts,
                        row.release_id,
                    )
                )
        return claimed

    def _headers(self, item: Claimed) -> dict[str, str]:
        assert item.body is not None
        nonce = f"{item.delivery_id}.{item.attempt}"
        extra = {RELEASE_HEADER: item.release_id} if item.release_id else None
        return sign_push(self._signing_key, item.url, item.body, item.media_type,
                         item.delivery_id, nonce, datetime.now(UTC), extra)  # fmt: skip

    def run_due(self, post: Poster, rng: random.Random | None = None) -> dict[str, int]:
        """One round: every due delivery tried once. Returns counts by outcome."""
        rng = rng or random.SystemRandom()
        counts = {"delivered": 0, "retrying": 0, "dead": 0}
        for item in self._claim():
            if item.body is None:
                outcome = Outcome(None, "crypto-shredded: the body's data key was destroyed")
                counts[self._finish(item, outcome, rng, final=True)] += 1
                continue
            outcome = post(item, self._headers(item))
            final = outcome.final or (
                outcome.status is not None
                and not (
                    200 <= outcome.status < 300
                    or outcome.status in RETRYABLE
                    or outcome.status >= 500
                )
            )
            counts[self._finish(item, outcome, rng, final=final)] += 1
        return counts

    def _finish(self, item: Claimed, outcome: Outcome, rng: random.Random, final: bool) -> str:
        now = to_us(self._clock.now())
        with self.db.transaction() as session:
            row = session.get(Delivery, item.delivery_id)
            assert row is not None
            row.response_status, row.last_error = outcome.status, outcome.error
            details: dict[str, Any] = {
                "delivery_id": row.delivery_id,
                "recipient": row.recipient,
                "kind": row.kind,
                "release_id": row.release_id,
                "deletion_id": row.deletion_id,
                "body_sha256": row.body_sha256,
                "attempts": row.attempts,
                "status_code": outcome.status,
            }
            if outcome.status is not None and 200 <= outcome.status < 300:
                row.status, row.delivered_us = DeliveryStatus.delivered, now
                row.receipt = self._check_receipt(session, row, outcome.receipt)
                details["signed_receipt"] = row.receipt is not None
                event, result = "delivery.delivered", "delivered"
            elif final or row.attempts >= self.settings.max_attempts:
                row.status = DeliveryStatus.dead
                details["error"] = outcome.error
                event, result = "delivery.dead_lettered", "dead"
            else:
                delay = backoff_s(row.attempts, self.settings, rng)
                if outcome.retry_after_s is not None:
                    delay = max(delay, min(outcome.retry_after_s, self.settings.backoff_cap_s))
                row.next_attempt_us = now + int(delay * 1_000_000)
                session.add(row)
                return "retrying"
            session.add(row)
            self._audit.record(session, [AuditEvent(event, "system:push", None, details)])
            return result

    def _check_receipt(self, session: Session, row: Delivery, token: str | None) -> str | None:
        """Keep the recipient's receipt if one of its registered keys signed it over this
        delivery's id and body digest."""
        if token is None:
            return None
        jwks = [k.jwk for k in keys_of(session, row.recipient)]
        try:
            claims = verify_json_by_any(token, jwks, RECEIPT_TYPE)
        except BadSignature:
            return None
        signed = (claims.get("delivery_id"), claims.get("body_sha256"))
        return token if signed == (row.delivery_id, row.body_sha256) else None

    # ---- operators ------------------------------------------------------------------------

    def redrive(self, delivery_id: str, actor: str) -> None:
        """Put a dead letter back in the queue with a fresh count of attempts."""
        with self.db.transaction() as session:
            row = session.get(Delivery, delivery_id)
            if row is None:
                raise NotFound(f"no delivery {delivery_id}")
            if row.status != DeliveryStatus.dead:
                raise NotRedrivable(f"delivery {delivery_id} is {row.status}, not a dead letter")
            row.status, row.attempts = DeliveryStatus.pending, 0
            row.next_attempt_us = to_us(self._clock.now())
            session.add(row)
            details = {"delivery_id": delivery_id, "recipient": row.recipient}
            self._audit.record(session, [AuditEvent("delivery.redriven", actor, None, details)])

    def deliveries(
        self, session: Session, recipient: str | None = None, status: str | None = None,
        limit: int = 100,
    ) -> Sequence[Delivery]:  # fmt: skip
        query = select(Delivery).order_by(col(Delivery.created_us).desc())
        if recipient is not None:
            query = query.where(col(Delivery.recipient) == recipient)
        if status is not None:
            query = query.where(col(Delivery.status) == status)
        return session.exec(query.limit(limit)).all()

    def counts(self, session: Session) -> dict[str, int]:
        rows = session.execute(
            sa_select(col(Delivery.status), func.count()).group_by(col(Delivery.status))
        ).all()
        out = {status.value: 0 for status in DeliveryStatus}
        out.update({str(status): int(n) for status, n in rows})
        return out


def delivery_json(row: Delivery) -> dict[str, Any]:
    return {
        "delivery_id": row.delivery_id,
        "recipient": row.recipient,
        "kind": row.kind,
        "feed_id": row.feed_id,
        "release_id": row.release_id,
        "deletion_id": row.deletion_id,
        "body_sha256": row.body_sha256,
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "last_error": row.last_error,
        "signed_receipt": row.receipt,
        "created": from_us(row.created_us).isoformat(),
        "delivered": None if row.delivered_us is None else from_us(row.delivered_us).isoformat(),
    }
