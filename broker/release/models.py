"""Tables of releases and feeds (migration 0007).

``release`` holds one row per release made: who received it, for what, under which decision
and policy revision, on which consents, in which tier, with its manifest, for which period; a
feed's page is released once (unique ``feed_id, period_from_us``, migration 0012, which filled
in the periods of earlier rows from their decisions). ``release_group`` holds the member sets
of aggregated releases for the differencing check of later releases to the same recipient, as
keyed hashes of the meters (never meter ids). ``feed`` holds subscriptions, pulled or pushed.
Rows of ``release`` and ``release_group`` are never changed (but for that one fill-in).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class ReleaseRecord(SQLModel, table=True):
    __tablename__ = "release"
    __table_args__ = (UniqueConstraint("feed_id", "period_from_us", name="uq_release_feed_period"),)

    release_id: str = Field(sa_column=Column(String(40), primary_key=True))
    recipient: str = Field(sa_column=Column(String(120), nullable=False, index=True))
    purpose: str = Field(sa_column=Column(String(64), nullable=False))
    decision_id: str = Field(sa_column=Column(String(40), nullable=False))
    revision: str = Field(sa_column=Column(String(40), nullable=False))
    consent_ids: str = Field(sa_column=Column(Text, nullable=False))
    """JSON list of the consent ids the decision rested on."""
    tier: str = Field(sa_column=Column(String(16), nullable=False))
    manifest_json: str = Field(sa_column=Column(Text, nullable=False))
    manifest_digest: str = Field(sa_column=Column(String(64), nullable=False))
    rows: int = Field(sa_column=Column(BigInteger, nullable=False))
    feed_id: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    at_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    period_from_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """The released period (every release since 0012). None: a release from before 0012 whose
    decision record was not found, or a later copy of a feed page released twice before 0012
    (the migration keeps the first as the page of record)."""
    period_to_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class ReleaseGroup(SQLModel, table=True):
    __tablename__ = "release_group"

    release_id: str = Field(sa_column=Column(String(40), primary_key=True))
    seq: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    recipient: str = Field(sa_column=Column(String(120), nullable=False, index=True))
    group_name: str = Field(sa_column=Column(String(120), nullable=False))
    start_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    end_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    members_json: str = Field(sa_column=Column(Text, nullable=False))
    """JSON list of the members' keyed hashes (``hs1:...``), sorted."""


class CanonicalUnit(SQLModel, table=True):
    """The recorded cells of one substation-day (aggregated: every granularity; dp: one
    granularity and ε), served unchanged to every recipient who asks (``broker.release.cells``)."""

    __tablename__ = "canonical_unit"

    unit_key: str = Field(sa_column=Column(String(240), primary_key=True))
    tier: str = Field(sa_column=Column(String(16), nullable=False))
    parent: str = Field(sa_column=Column(String(120), nullable=False))
    day: int = Field(sa_column=Column(Integer, nullable=False))
    cells_json: str = Field(sa_column=Column(Text, nullable=False))
    members_json: str = Field(sa_column=Column(Text, nullable=False))
    """JSON list of [label, [keyed hashes]]: who is in each released label over the day."""
    release_id: str = Field(sa_column=Column(String(40), nullable=False))
    """The release that first computed the unit."""
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class Feed(SQLModel, table=True):
    __tablename__ = "feed"

    feed_id: str = Field(sa_column=Column(String(40), primary_key=True))
    recipient: str = Field(sa_column=Column(String(120), nullable=False, index=True))
    purpose: str = Field(sa_column=Column(String(64), nullable=False))
    categories: str = Field(sa_column=Column(Text, nullable=False))
    """JSON list."""
    granularity: str = Field(sa_column=Column(String(16), nullable=False))
    scope: str = Field(sa_column=Column(String(16), nullable=False))
    """``subject`` (one customer's data) or ``aggregate``."""
    subject: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    """The customer's reference (subject feeds only)."""
    groups: str = Field(sa_column=Column(Text, nullable=False))
    """JSON list of feeders (aggregate feeds); empty for subject feeds."""
    tier: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    """A tier asked for (the policy may only make it coarser); None: the purpose's default."""
    period_from_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    period_to_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """None: continuous."""
    format: str = Field(sa_column=Column(String(16), nullable=False))
    delivery: str = Field(
        default="pull", sa_column=Column(String(8), nullable=False, server_default="pull")
    )
    """``pull`` (the recipient pages it) or ``push`` (the broker posts each day to its webhook)."""
    push_cursor: str | None = Field(default=None, sa_column=Column(String(512), nullable=True))
    """Push feeds: the cursor of the next day to push."""
    status: str = Field(sa_column=Column(String(16), nullable=False))
    stop_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    stopped_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
