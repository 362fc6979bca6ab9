"""Tables of the customers: the customer (created when the MDMS provisions its meter, with its
name, address and account number sealed under the customer's data key), local accounts,
identities at an upstream OpenID Connect provider linked to customers, signed-in sessions and
the sign-in throttle.

Passwords are stored only as argon2id hashes; sessions only as SHA-256 of the random id their
cookie carries.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, String
from sqlmodel import Field, SQLModel


class Customer(SQLModel, table=True):
    __tablename__ = "customer"

    customer_ref: str = Field(sa_column=Column(String(64), primary_key=True))
    subject_hash: str = Field(sa_column=Column(String(80), nullable=False))
    """The keyed hash that names the customer's data keys (``data_key.subject_hash``)."""
    name_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    address_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    account_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class CustomerAccount(SQLModel, table=True):
    __tablename__ = "customer_account"

    username: str = Field(sa_column=Column(String(64), primary_key=True))
    customer_ref: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    password_hash: str = Field(sa_column=Column(String(256), nullable=False))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class CustomerIdentity(SQLModel, table=True):
    """An identity at an OpenID Connect provider (issuer, subject) that signs in as a customer;
    an operator links it (``broker customers link-identity``)."""

    __tablename__ = "customer_identity"

    issuer: str = Field(sa_column=Column(String(512), primary_key=True))
    subject: str = Field(sa_column=Column(String(255), primary_key=True))
    customer_ref: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    linked_us: int = Field(sa_column=Column(BigInteger, nullable=False))


class PortalSession(SQLModel, table=True):
    """A signed-in browser: the SHA-256 of the random id its cookie carries (a database reader
    cannot present one), the customer, and when it ends. Sign-out deletes the row; a password
    change deletes every row of the customer."""

    __tablename__ = "portal_session"

    id_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    customer_ref: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    created_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class SignInFailures(SQLModel, table=True):
    """Consecutive wrong passwords of one account or one client address (``key``: a kind and
    the keyed hash of the name or address, never the name or address itself), and until when
    the next attempt must wait."""

    __tablename__ = "portal_throttle"

    key: str = Field(sa_column=Column(String(120), primary_key=True))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    wait_until_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_failure_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
