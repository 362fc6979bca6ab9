"""Tables of push delivery and deletion (migration 0009).

``delivery`` is the outbox of webhook pushes: one row per body to deliver (a release of a push
feed, or a deletion request), the body sealed under a data key (the customer's own for a
subject feed, so erasing the customer crypto-shreds what waits to be sent), its SHA-256, and
the state of its attempts. ``deletion_request`` holds what the broker asked a recipient to
delete after a withdrawal, an expiry or an erasure: the signed request, the deadline, and the
recipient's signed acknowledgement. Rows are updated only to record attempts, receipts and
acknowledgements, and by the retention job, which erases a body past its period
(``broker.retention``); none is deleted.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, String, Text
from sqlmodel import Field, SQLModel


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    dead = "dead"
    """Dead letter: out of attempts, refused for good, or its body was crypto-shredded."""


class DeletionStatus(StrEnum):
    requested = "requested"
    acknowledged = "acknowledged"


class Delivery(SQLModel, table=True):
    __tablename__ = "delivery"

    delivery_id: str = Field(sa_column=Column(String(40), primary_key=True))
    recipient: str = Field(sa_column=Column(String(120), nullable=False, index=True))
    kind: str = Field(sa_column=Column(String(24), nullable=False))
    """``release`` or ``deletion_request``."""
    url: str = Field(sa_column=Column(String(2000), nullable=False))
    feed_id: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    release_id: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    deletion_id: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    media_type: str = Field(sa_column=Column(String(80), nullable=False))
    body_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    body_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    next_attempt_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    response_status: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    receipt: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """The recipient's signed receipt (compact JWS over the body digest), when it sent one."""
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    """Indexed for the retention job, which erases bodies by age (migration 0015)."""
    delivered_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class DeletionRequest(SQLModel, table=True):
    __tablename__ = "deletion_request"

    deletion_id: str = Field(sa_column=Column(String(40), primary_key=True))
    recipient: str = Field(sa_column=Column(String(120), nullable=False, index=True))
    subject_hash: str = Field(sa_column=Column(String(80), nullable=False, index=True))
    consent_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    reason: str = Field(sa_column=Column(String(16), nullable=False))
    """``withdrawn``, ``expired`` or ``erasure``."""
    release_ids: str = Field(sa_column=Column(Text, nullable=False))
    """JSON list of the releases whose data is to be deleted."""
    request_jws: str = Field(sa_column=Column(Text, nullable=False))
    requested_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    due_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    ack_jws: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    acked_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
