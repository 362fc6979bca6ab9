"""Tables of the authorization server.

``oauth_jti`` is the replay cache of ``private_key_jwt`` assertions (RFC 7523 §3, item 7): one
row per assertion accepted, keyed by a digest of (client id, jti), kept until the assertion
expires; after that the assertion itself is refused for its ``exp``.

``oauth_code`` holds the authorization codes of the customer's consent flow only as SHA-256 of
the code (a database reader cannot redeem one), single use, minutes long, bound to the consent
they were issued for and to the PKCE challenge of the client that asked; ``oauth_redirect_uri``
the redirect URIs each client registered.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, String, Text
from sqlmodel import Field, SQLModel


class UsedAssertion(SQLModel, table=True):
    __tablename__ = "oauth_jti"

    digest: str = Field(sa_column=Column(String(64), primary_key=True))
    """SHA-256 hex of ``client_id`` NUL ``jti``."""
    client_id: str = Field(sa_column=Column(String(100), nullable=False))
    expires_us: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class AuthCode(SQLModel, table=True):
    __tablename__ = "oauth_code"

    code_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    client_id: str = Field(sa_column=Column(String(120), nullable=False))
    customer_ref: str = Field(sa_column=Column(String(64), nullable=False))
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    code_challenge: str = Field(sa_column=Column(String(128), nullable=False))
    consent_id: str = Field(sa_column=Column(String(64), nullable=False))
    scope: str = Field(sa_column=Column(Text, nullable=False))
    expires_us: int = Field(sa_column=Column(BigInteger, nullable=False))
    used: bool = Field(sa_column=Column(Boolean, nullable=False))


class RedirectUri(SQLModel, table=True):
    __tablename__ = "oauth_redirect_uri"

    client_id: str = Field(sa_column=Column(String(120), primary_key=True))
    uri: str = Field(sa_column=Column(String(512), primary_key=True))
