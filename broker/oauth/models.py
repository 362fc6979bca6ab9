"""The replay cache of ``private_key_jwt`` assertions (RFC 7523 §3, item 7).

One row per assertion accepted, keyed by a digest of (client id, jti), kept until the
assertion expires: after that the assertion itself is refused for its ``exp``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String
from sqlmodel import Field, SQLModel


class UsedAssertion(SQLModel, table=True):
    __tablename__ = "oauth_jti"

    digest: str = Field(sa_column=Column(String(64), primary_key=True))
    """SHA-256 hex of ``client_id`` NUL ``jti``."""
    client_id: str = Field(sa_column=Column(String(100), nullable=False))
    expires_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
