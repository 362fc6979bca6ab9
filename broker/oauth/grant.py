"""The authorization-code flow with PKCE (RFC 6749 §4.1, RFC 7636 S256 only), as Green Button
Connect My Data does it: the third party sends the customer here naming what it wants; the
customer signs in, reads a consent page in plain words, approves or narrows it; approval writes
the consent event (with the notice shown, hashed) and a single-use code bound to that consent,
the client, its redirect URI and its PKCE challenge. The client redeems the code at the token
endpoint over mutual TLS (``redeem``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import Session

from broker.kit.clock import Clock, to_us
from broker.oauth.errors import AuthorizeError, InvalidGrant
from broker.oauth.models import AuthCode, RedirectUri

CODES = AuthCode.metadata.tables["oauth_code"]
REDIRECTS = RedirectUri.metadata.tables["oauth_redirect_uri"]
CODE_TTL = timedelta(minutes=5)
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")
GRANULARITIES = ("15min", "30min", "hourly", "daily", "monthly")


@dataclass(frozen=True)
class ConsentAsk:
    """What the third party asks for, as the consent page shows it."""

    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    purpose: str
    categories: tuple[str, ...]
    granularity: str
    days: int

    def as_scope(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "categories": list(self.categories),
            "granularity": self.granularity,
            "days": self.days,
        }


def allow_redirect(session: Session, client_id: str, uri: str) -> None:
    if not uri.startswith("https://"):
        raise AuthorizeError("redirect URIs must be https")
    exists = session.execute(
        select(REDIRECTS.c.uri).where(REDIRECTS.c.client_id == client_id, REDIRECTS.c.uri == uri)
    ).first()
    if exists is None:
        session.execute(insert(REDIRECTS).values(client_id=client_id, uri=uri))


def check_request(
    session: Session, params: dict[str, str], purposes: set[str], categories: set[str]
) -> ConsentAsk:
    """Validate an authorization request; deny by default: what is not named is not asked."""
    client_id, uri = params.get("client_id", ""), params.get("redirect_uri", "")
    known = session.execute(
        select(REDIRECTS.c.uri).where(REDIRECTS.c.client_id == client_id, REDIRECTS.c.uri == uri)
    ).first()
    if known is None:
        raise AuthorizeError("unknown client or redirect_uri (register it first)")
    if params.get("response_type") != "code":
        raise AuthorizeError("response_type must be code")
    if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(
        params.get("code_challenge", "")
    ):
        raise AuthorizeError("PKCE with code_challenge_method=S256 is required")
    purpose = params.get("purpose", "")
    if purpose not in purposes:
        raise AuthorizeError(f"unknown purpose {purpose!r}")
    asked = tuple(sorted({c for c in params.get("categories", "").split(",") if c}))
    if not asked or not set(asked) <= categories:
        raise AuthorizeError(
            "name the data categories (known: " + ", ".join(sorted(categories)) + ")"
        )
    granularity = params.get("granularity", "")
    if granularity not in GRANULARITIES:
        raise AuthorizeError("granularity must be one of " + ", ".join(GRANULARITIES))
    days = params.get("days", "")
    if not days.isdigit() or not 1 <= int(days) <= 365:
        raise AuthorizeError("days must be 1 to 365")
    return ConsentAsk(
        client_id,
        uri,
        params.get("state", ""),
        params["code_challenge"],
        purpose,
        asked,
        granularity,
        int(days),
    )


def narrowed(ask: ConsentAsk, categories: list[str], granularity: str, days: int) -> ConsentAsk:
    """The customer may give less than asked, never more."""
    kept = tuple(sorted(set(categories) & set(ask.categories)))
    if not kept:
        raise AuthorizeError("choose at least one kind of data, or deny")
    if granularity not in GRANULARITIES or GRANULARITIES.index(granularity) < GRANULARITIES.index(
        ask.granularity
    ):
        granularity = ask.granularity
    return ConsentAsk(
        ask.client_id,
        ask.redirect_uri,
        ask.state,
        ask.code_challenge,
        ask.purpose,
        kept,
        granularity,
        max(1, min(days, ask.days)),
    )


def issue_code(
    session: Session, clock: Clock, ask: ConsentAsk, customer_ref: str, consent_id: str
) -> str:
    code = secrets.token_urlsafe(32)
    session.execute(
        insert(CODES).values(
            code_hash=hashlib.sha256(code.encode()).hexdigest(),
            client_id=ask.client_id,
            customer_ref=customer_ref,
            redirect_uri=ask.redirect_uri,
            code_challenge=ask.code_challenge,
            consent_id=consent_id,
            scope=json.dumps(ask.as_scope(), sort_keys=True),
            expires_us=to_us(clock.now() + CODE_TTL),
            used=False,
        )
    )
    return code


@dataclass(frozen=True)
class Redeemed:
    customer_ref: str
    consent_id: str
    scope: dict[str, Any]


def redeem(
    session: Session, clock: Clock, code: str, client_id: str, redirect_uri: str, verifier: str
) -> Redeemed:
    """Exchange a code once, for the client it was issued to, with the PKCE verifier."""
    if not _VERIFIER.match(verifier):
        raise InvalidGrant("code_verifier must be 43-128 unreserved characters")
    row = session.execute(
        select(CODES).where(CODES.c.code_hash == hashlib.sha256(code.encode()).hexdigest())
    ).first()
    if row is None or row.used or row.expires_us <= to_us(clock.now()):
        raise InvalidGrant("the code is unknown, used or expired")
    if row.client_id != client_id or row.redirect_uri != redirect_uri:
        raise InvalidGrant("the code was issued to another client or redirect_uri")
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    if not secrets.compare_digest(challenge, row.code_challenge):
        raise InvalidGrant("the code_verifier does not match the code_challenge")
    session.execute(update(CODES).where(CODES.c.code_hash == row.code_hash).values(used=True))
    return Redeemed(row.customer_ref, row.consent_id, json.loads(row.scope))
