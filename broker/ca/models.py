"""Table of certificates issued by the private CA, with their revocation state."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Text
from sqlmodel import Field, SQLModel


class IssuedCertificate(SQLModel, table=True):
    __tablename__ = "ca_certificate"

    serial: str = Field(sa_column=Column(String(64), primary_key=True))
    """Serial number in lower-case hex."""
    name: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    role: str = Field(sa_column=Column(String(32), nullable=False))
    fingerprint_sha256: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    not_before_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    not_after_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    issued_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    """When the CA issued it, to the microsecond (``not_before`` is whole seconds): which of a
    recipient's certificates is the oldest, retired first when a renewal passes the cap."""
    revoked_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revocation_reason: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    pem: str = Field(sa_column=Column(Text, nullable=False))
