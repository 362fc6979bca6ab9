"""The decision log: every release decision, replayable by ``broker policy diff``.

The input is stored as evaluated, and it names the customer only by a keyed hash
(``request.subject``): replaying needs no personal data, and erasing a customer leaves the log
intact. Times are microseconds since the epoch, as everywhere in the broker.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, String, Text
from sqlmodel import Field, SQLModel

INPUT_PURGED = '{"purged":"retention"}'
"""What ``input_json`` holds once the retention job erased the input (``broker.retention``):
the decision is no longer replayed."""


class PolicyDecision(SQLModel, table=True):
    __tablename__ = "policy_decision"

    decision_id: str = Field(sa_column=Column(String(40), primary_key=True))
    at_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    revision: str = Field(sa_column=Column(String(64), nullable=False))
    engine: str = Field(sa_column=Column(String(16), nullable=False))
    purpose: str = Field(sa_column=Column(String(64), nullable=False))
    recipient: str = Field(sa_column=Column(String(64), nullable=False))
    allow: bool = Field(sa_column=Column(Boolean, nullable=False))
    tier: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    input_json: str = Field(sa_column=Column(Text, nullable=False))
    result_json: str = Field(sa_column=Column(Text, nullable=False))
