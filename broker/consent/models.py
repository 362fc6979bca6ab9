"""The consent ledger's one table: ``consent_event``, append-only, one row per event.

The body column holds the event exactly as hashed (RFC 8785 JSON), so the chain is checked
against what is stored, byte for byte; the other columns repeat what queries filter on
(consent, customer) and are checked against the body by ``ConsentService.verify``. There is
no foreign key to ``customer``: the ledger is evidence that outlives a customer's erasure.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, String, Text
from sqlmodel import Field, SQLModel

# On SQLite an INTEGER PRIMARY KEY is the rowid itself: one B-tree less to write per event.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


class ConsentEventRow(SQLModel, table=True):
    __tablename__ = "consent_event"

    seq: int = Field(sa_column=Column(_SEQ, primary_key=True, autoincrement=False))
    consent_id: str = Field(sa_column=Column(String(40), nullable=False, index=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    customer_ref: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    recipient: str = Field(sa_column=Column(String(120), nullable=False))
    at_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
