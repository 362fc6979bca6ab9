"""Tables of the privacy side: budget spends (one row per DP release) and pseudonym domains.

A budget spend is never updated or deleted. It is charged to a cell, the household-days of one
substation and day, whoever asked: the accountant for a new draw of that cell's noise is rebuilt
from every row of the cell (``broker.release.cells``). A pseudonym domain holds only the
version of its key; the key itself is derived from the pseudonym master key file and never
stored in the database, beside the data it pseudonymises.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, String
from sqlmodel import Field, SQLModel


class PrivacySpend(SQLModel, table=True):
    __tablename__ = "privacy_spend"

    spend_id: str = Field(sa_column=Column(String(40), primary_key=True))
    recipient: str = Field(sa_column=Column(String(120), nullable=False, index=True))
    release_id: str = Field(sa_column=Column(String(64), nullable=False))
    at_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    epsilon: float = Field(sa_column=Column(Float, nullable=False))
    delta: float = Field(sa_column=Column(Float, nullable=False))
    mechanism: str = Field(sa_column=Column(String(32), nullable=False))
    privacy_unit: str = Field(sa_column=Column(String(32), nullable=False))
    cell: str | None = Field(default=None, sa_column=Column(String(200), nullable=True, index=True))
    """The household-days charged: ``<substation>|<day>`` (one ledger for every recipient);
    None on rows written before cells were charged."""


class PseudonymDomain(SQLModel, table=True):
    __tablename__ = "pseudonym_domain"

    domain: str = Field(sa_column=Column(String(120), primary_key=True))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    rekeyed_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
