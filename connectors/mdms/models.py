"""Tables of the reference MDMS: meters, meter keys, sealed reading days, tallies (the customers
they belong to are ``broker.customers.models.Customer``).

Personal data is kept apart from readings and sealed field by field (C1.7, R1.3): a customer's
name, address and account number are AES-GCM blocks under that customer's data key, and so is
each day of a meter's readings (one block per meter and day). Meter keys are stored only
wrapped by the key-encryption key (C1.6), one row per key version with its own invocation
counter, so frames sent under a previous key still verify during a grace window.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
)
from sqlmodel import Field, SQLModel


class Meter(SQLModel, table=True):
    """A provisioned meter; ``last_end_s`` and ``last_register_wh`` are the VEE state."""

    __tablename__ = "meter"

    meter_id: str = Field(sa_column=Column(String(16), primary_key=True))
    """The system title in upper-case hex (16 characters)."""
    customer_ref: str = Field(
        sa_column=Column(
            String(64), ForeignKey("customer.customer_ref"), nullable=False, index=True
        )
    )
    feeder: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    postcode: str = Field(sa_column=Column(String(16), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    key_version: int = Field(sa_column=Column(Integer, nullable=False))
    """The version of ``meter_key`` the meter was last told to use."""
    last_ic: int = Field(sa_column=Column(BigInteger, nullable=False))
    """The highest invocation counter accepted under ``key_version`` (kept here, not in
    ``meter_key``, so ingest updates one row per meter)."""
    downlink_ic: int = Field(sa_column=Column(BigInteger, nullable=False))
    """The invocation counter of the MDMS's last ciphered request to this meter."""
    interval_s: int = Field(sa_column=Column(Integer, nullable=False))
    """The meter's profile capture period in seconds, as provisioned (900 unless the key file
    says otherwise)."""
    last_end_s: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_register_wh: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class MeterKey(SQLModel, table=True):
    """One version of a meter's keys, each wrapped by the KEK; history kept for the grace."""

    __tablename__ = "meter_key"

    meter_id: str = Field(
        sa_column=Column(String(16), ForeignKey("meter.meter_id"), primary_key=True)
    )
    version: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    kek_id: str | None = Field(default=None, sa_column=Column(String(80), nullable=True))
    encryption_wrapped: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True)
    )
    authentication_wrapped: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True)
    )
    master_wrapped: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    last_ic: int = Field(sa_column=Column(BigInteger, nullable=False))
    """The highest counter accepted under this version while it is not the meter's current
    one (for the current version, ``meter.last_ic`` holds it)."""
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    valid_until_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """None while current; the end of the grace window once superseded."""


class ReadingDay(SQLModel, table=True):
    """One meter's readings of one UTC day, sealed under its customer's data key."""

    __tablename__ = "reading_day"

    meter_id: str = Field(sa_column=Column(String(16), primary_key=True))
    """No foreign key: only the ingest pipeline writes here, after it found the meter, and a
    key check per row would slow the bulk copy of a day's blocks."""
    day: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    """Days since 1970-01-01 (UTC) of the intervals' starts."""
    readings: int = Field(sa_column=Column(SmallInteger, nullable=False))
    estimated: int = Field(sa_column=Column(SmallInteger, nullable=False))
    flags: int = Field(sa_column=Column(SmallInteger, nullable=False))
    """OR of the quality flags of the day's readings (``connectors.mdms.vee.Quality``)."""
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    updated_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class IngestTally(SQLModel, table=True):
    """Frames per day, source and outcome (``accepted``, ``duplicate``, or a reason code)."""

    __tablename__ = "ingest_tally"

    day: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    source: str = Field(sa_column=Column(String(120), primary_key=True))
    outcome: str = Field(sa_column=Column(String(32), primary_key=True))
    frames: int = Field(sa_column=Column(BigInteger, nullable=False))
