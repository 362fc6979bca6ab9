"""Withdrawal and expiry propagate to recipients: signed deletion requests, signed
acknowledgements, deadlines the regulator can see (X.1332 R3.4, C2.2).

When a consent is withdrawn or expires (``consent.withdrawn`` / ``consent.expired``, whatever
path wrote it: portal, CLI, the expiry sweep), ``Deletions.on_consent_events`` runs in the same
transaction: for every recipient that received releases under that consent it writes a
``deletion_request`` naming those releases, with a deadline (``BROKER_PUSH_DELETION_DUE_DAYS``,
30 days by default), signs it (compact JWS, alg Ed25519, ``typ``
``x1332-deletion-request+jws``, the broker's delivery key) and, when the recipient registered a
webhook, queues it in the push outbox. Recipients without a webhook read their requests at
``GET /v1/deletions``.

The recipient acknowledges with a compact JWS signed by a key it registered (the
``private_key_jwt`` keys, ES256 or Ed25519), ``typ`` ``x1332-deletion-ack+jws``, over
``{"deletion_id", "recipient", "release_ids", "deleted_at"}``; the release ids must be those of
the request. The acknowledgement is verified, stored and audited (``deletion.acknowledged``).
A request past its deadline without an acknowledgement is *overdue*: the regulator's routes and
metrics show it.

An erasure (``broker.delivery.erasure``) writes one request per recipient with the reason
``erasure`` instead of one per consent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.delivery.errors import AlreadyAcknowledged, BadAcknowledgement, BadSignature
from broker.delivery.models import DeletionRequest, DeletionStatus
from broker.delivery.outbox import Outbox
from broker.delivery.signing import DELETION_TYPE, sign_json, verify_json_by_any
from broker.errors import NotFound
from broker.kit.clock import Clock, from_us, to_us
from broker.kit.ids import SubjectHasher, new_id
from broker.recipients.models import Recipient
from broker.recipients.service import keys_of
from broker.release.models import ReleaseRecord

ACK_TYPE = "x1332-deletion-ack+jws"
REASONS = ("withdrawn", "expired", "erasure")
ERASING = "deletion_reason_erasure"
"""Set in a session's ``info`` while an erasure withdraws consents: the erasure writes one
request per recipient itself, so the withdrawals write none."""


def releases_under(
    session: Session, consent_ids: Sequence[str], recipient: str | None = None
) -> dict[str, list[str]]:
    """Release ids by recipient, of the releases that rested on any of ``consent_ids``."""
    wanted = set(consent_ids)
    out: dict[str, list[str]] = defaultdict(list)
    for consent_id in sorted(wanted):
        query = select(ReleaseRecord.release_id, ReleaseRecord.recipient, ReleaseRecord.consent_ids)
        query = query.where(col(ReleaseRecord.consent_ids).contains(f'"{consent_id}"'))
        if recipient is not None:
            query = query.where(col(ReleaseRecord.recipient) == recipient)
        for release_id, to, ids in session.exec(query):
            if consent_id in json.loads(ids) and release_id not in out[to]:
                out[to].append(release_id)
    return {to: sorted(ids) for to, ids in out.items()}


def deletion_json(row: DeletionRequest, now: datetime | None = None) -> dict[str, Any]:
    overdue = row.status == DeletionStatus.requested and now is not None and to_us(now) > row.due_us
    return {
        "deletion_id": row.deletion_id,
        "recipient": row.recipient,
        "customer": row.subject_hash,
        "consent_id": row.consent_id,
        "reason": row.reason,
        "release_ids": json.loads(row.release_ids),
        "requested": from_us(row.requested_us).isoformat(),
        "due": from_us(row.due_us).isoformat(),
        "status": "overdue" if overdue else row.status,
        "request": row.request_jws,
        "acknowledged": None if row.acked_us is None else from_us(row.acked_us).isoformat(),
    }


class Deletions:
    def __init__(
        self,
        audit: AuditSink,
        clock: Clock,
        hasher: SubjectHasher,
        signing_key: Ed25519PrivateKey,
        outbox: Outbox | None,
        due: timedelta,
        issuer: str,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._hash = hasher
        self._key = signing_key
        self._outbox = outbox
        self._due = due
        self._issuer = issuer

    # ---- requests -------------------------------------------------------------------------

    def on_consent_events(
        self, session: Session, events: Sequence[tuple[str, str, str, str]], actor: str
    ) -> list[str]:
        """For each (kind, consent id, customer, recipient) of a withdrawal or expiry, request
        deletion of what the recipient received under it. Returns the request ids."""
        if session.info.get(ERASING):
            return []
        made = []
        for kind, consent_id, customer, recipient in events:
            if kind not in ("withdrawn", "expired"):
                continue
            got = releases_under(session, [consent_id], recipient).get(recipient)
            if got:
                made.append(
                    self.request(session, recipient, customer, got, kind, consent_id, actor)
                )
        return made

    def request(
        self,
        session: Session,
        recipient: str,
        customer: str,
        release_ids: Sequence[str],
        reason: str,
        consent_id: str | None = None,
        actor: str = "system",
    ) -> str:
        """Write, sign, audit and (webhook) queue one deletion request; returns its id."""
        assert reason in REASONS
        now = self._clock.now()
        due = now + self._due
        deletion_id = new_id("del")
        subject_hash = self._hash(customer)
        payload = {
            "iss": self._issuer,
            "deletion_id": deletion_id,
            "recipient": recipient,
            "consent_id": consent_id,
            "reason": reason,
            "release_ids": sorted(release_ids),
            "requested_at": now.isoformat(),
            "due": due.isoformat(),
            "acknowledge_with": {"typ": ACK_TYPE, "url": f"/v1/deletions/{deletion_id}/ack"},
        }
        token = sign_json(self._key, payload, DELETION_TYPE)
        session.add(
            DeletionRequest(
                deletion_id=deletion_id,
                recipient=recipient,
                subject_hash=subject_hash,
                consent_id=consent_id,
                reason=reason,
                release_ids=json.dumps(sorted(release_ids)),
                request_jws=token,
                requested_us=to_us(now),
                due_us=to_us(due),
                status=DeletionStatus.requested,
            )
        )
        session.flush()
        details = {
            "deletion_id": deletion_id,
            "recipient": recipient,
            "consent_id": consent_id,
            "reason": reason,
            "releases": len(release_ids),
            "due": due.isoformat(),
        }
        self._audit.record(
            session, [AuditEvent("deletion.requested", actor, subject_hash, details)]
        )
        row = session.get(Recipient, recipient)
        if self._outbox is not None and row is not None and row.webhook_url:
            body = json.dumps({"type": "deletion_request", "deletion_request": token}).encode()
            self._outbox.enqueue(
                session,
                recipient=recipient,
                url=row.webhook_url,
                kind="deletion_request",
                body=body,
                media_type="application/json",
                deletion_id=deletion_id,
            )
        return deletion_id

    # ---- acknowledgements -----------------------------------------------------------------

    def acknowledge(
        self, session: Session, recipient: str, deletion_id: str, ack: str
    ) -> dict[str, Any]:
        row = session.get(DeletionRequest, deletion_id)
        if row is None or row.recipient != recipient:  # another's request: as if none existed
            raise NotFound(f"no deletion request {deletion_id}")
        if row.status == DeletionStatus.acknowledged:
            raise AlreadyAcknowledged(f"deletion request {deletion_id} is already acknowledged")
        claims = self._verify_ack(session, recipient, ack)
        if claims.get("deletion_id") != deletion_id or claims.get("recipient") != recipient:
            raise BadAcknowledgement("the acknowledgement names another request or recipient")
        if sorted(claims.get("release_ids") or []) != json.loads(row.release_ids):
            raise BadAcknowledgement("the acknowledgement does not name the requested releases")
        if not isinstance(claims.get("deleted_at"), str):
            raise BadAcknowledgement("the acknowledgement has no deleted_at")
        now = self._clock.now()
        row.status, row.ack_jws, row.acked_us = DeletionStatus.acknowledged, ack, to_us(now)
        session.add(row)
        late = to_us(now) > row.due_us
        details = {"deletion_id": deletion_id, "recipient": recipient, "late": late,
                   "deleted_at": claims["deleted_at"]}  # fmt: skip
        self._audit.record(
            session,
            [AuditEvent("deletion.acknowledged", f"recipient:{recipient}", row.subject_hash,
                        details)],
        )  # fmt: skip
        return deletion_json(row, now)

    def _verify_ack(self, session: Session, recipient: str, ack: str) -> dict[str, Any]:
        jwks = [k.jwk for k in keys_of(session, recipient)]
        try:
            return verify_json_by_any(ack, jwks, ACK_TYPE)
        except BadSignature as exc:
            raise BadAcknowledgement(
                f"the acknowledgement's signature does not verify: {exc.message}"
            ) from exc


def find(
    session: Session, now: datetime, status: str | None = None, recipient: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:  # fmt: skip
    """Deletion requests (the regulator's, or one ``recipient``'s): ``overdue`` (requested, past
    due), ``requested``, ``acknowledged`` or all, in the order they fall due."""
    query = select(DeletionRequest)
    if recipient is not None:
        query = query.where(col(DeletionRequest.recipient) == recipient)
    if status in ("overdue", "requested"):
        query = query.where(col(DeletionRequest.status) == DeletionStatus.requested)
    if status == "overdue":
        query = query.where(col(DeletionRequest.due_us) < to_us(now))
    if status == "acknowledged":
        query = query.where(col(DeletionRequest.status) == DeletionStatus.acknowledged)
    query = query.order_by(col(DeletionRequest.due_us)).limit(limit)
    return [deletion_json(row, now) for row in session.exec(query)]


def counts(session: Session, now: datetime) -> dict[str, int]:
    """Deletion requests: requested (all), acknowledged, acknowledged late, overdue, pending."""
    table = DeletionRequest
    total = session.execute(sa_select(func.count()).select_from(table)).scalar_one()
    acked = session.execute(
        sa_select(func.count()).where(col(table.status) == DeletionStatus.acknowledged)
    ).scalar_one()
    late = session.execute(
        sa_select(func.count()).where(
            col(table.status) == DeletionStatus.acknowledged,
            col(table.acked_us) > col(table.due_us),
        )
    ).scalar_one()
    overdue = session.execute(
        sa_select(func.count()).where(
            col(table.status) == DeletionStatus.requested, col(table.due_us) < to_us(now)
        )
    ).scalar_one()
    return {
        "requested": int(total),
        "acknowledged": int(acked),
        "acknowledged_late": int(late),
        "overdue": int(overdue),
        "awaiting": int(total) - int(acked) - int(overdue),
    }
