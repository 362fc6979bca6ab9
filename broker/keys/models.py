"""Table of data keys: one row per subject and version, the key stored only wrapped by the KEK."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, String, UniqueConstraint
from sqlmodel import Field, SQLModel


class DataKey(SQLModel, table=True):
    __tablename__ = "data_key"
    __table_args__ = (UniqueConstraint("subject_hash", "version"),)

    key_ref: str = Field(sa_column=Column(String(80), primary_key=True))
    subject_hash: str = Field(sa_column=Column(String(80), nullable=False, index=True))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    kek_id: str | None = Field(default=None, sa_column=Column(String(80), nullable=True))
    wrapped: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    destroyed_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
