"""Tables of the audit log: entries, stored Merkle nodes, the head, and signed checkpoints.

Only full subtrees of height ``TILE_HEIGHT`` (6) and above are stored as nodes; hashes below
that are recomputed from the ≤ 64 leaf hashes of one tile, which keeps appends to about one
row per entry while a proof still needs only a few indexed reads. Leaf hashes are not stored:
they are recomputed from the bodies of the one or two tiles a proof reads (a stored hash column
cost ~1.3 µs per appended row on SQLite). Entries are indexed by
sequence and time only: an export filters by type while it scans its time window, which keeps
one more index off the append path.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, SmallInteger, String, Text
from sqlmodel import Field, SQLModel

# On SQLite an INTEGER PRIMARY KEY is the rowid itself: one B-tree less to write per entry.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    seq: int = Field(sa_column=Column(_SEQ, primary_key=True, autoincrement=False))
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    at_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    body: str = Field(sa_column=Column(Text, nullable=False))


class AuditNode(SQLModel, table=True):
    __tablename__ = "audit_node"

    level: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class AuditHead(SQLModel, table=True):
    """One row (id 1): the tree size. Writers lock it, so appends are serialised."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))


class AuditCheckpoint(SQLModel, table=True):
    __tablename__ = "audit_checkpoint"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
