"""Tables of the recipients registry: who may receive data, and the keys they sign with.

``recipient_id`` is the name in the recipient's client certificate (its CN), so the TLS layer
and the registry name a caller the same way. ``purposes`` is a JSON list of purpose names.
A ``recipient_key`` holds a public JWK the recipient registered for ``private_key_jwt``.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Column, ForeignKey, String, Text
from sqlmodel import Field, SQLModel


class Kind(StrEnum):
    third_party = "third_party"
    researcher = "researcher"
    supplier = "supplier"
    ems = "ems"


class Status(StrEnum):
    active = "active"
    suspended = "suspended"
    revoked = "revoked"


class Recipient(SQLModel, table=True):
    __tablename__ = "recipient"

    recipient_id: str = Field(sa_column=Column(String(100), primary_key=True))
    display_name: str = Field(sa_column=Column(String(200), nullable=False))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    purposes: str = Field(sa_column=Column(Text, nullable=False))
    """JSON list of the purposes this recipient may ask data for."""
    webhook_url: str | None = Field(default=None, sa_column=Column(String(2000), nullable=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    suspended_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """When it was last suspended: its tokens issued before are refused, even after
    reinstatement (null: never suspended)."""


class RecipientKey(SQLModel, table=True):
    __tablename__ = "recipient_key"

    recipient_id: str = Field(
        sa_column=Column(
            String(100), ForeignKey("recipient.recipient_id"), primary_key=True, nullable=False
        )
    )
    kid: str = Field(sa_column=Column(String(100), primary_key=True, nullable=False))
    jwk: str = Field(sa_column=Column(Text, nullable=False))
    """The public JWK as JSON (private members refused at registration)."""
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
