"""What a narrowed token may reach (R3.3, C3.2): its ``purpose:`` and ``consent:`` scopes bound
every release it makes.

A feed is within a token's narrowing when its purpose is one the token names (``purpose:``),
and, for a token of the authorization-code flow (``consent:<id>``), when it stays inside that
consent: a single customer's feed, of that customer, for one of the consent's purposes, of
categories it names and no finer than its granularity, to the recipient it was given to. The
API checks a new subscription (pull or push) before anything is stored, and an existing feed
before each page is released, so no decision is made or recorded for what the token may not
ask; a token without narrowing keeps every purpose the registry allows. Whether the consent is
still in force is the policy's to decide at each page (a withdrawal stops the feed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from broker.consent.service import ConsentService
from broker.oauth.errors import InsufficientScope
from broker.oauth.scopes import CONSENT_PREFIX, PURPOSE_PREFIX, Narrowing
from consent_ledger import GRANULARITY_S, ConsentTerms


@dataclass(frozen=True)
class FeedShape:
    """What a feed releases, as a new subscription or a stored feed names it."""

    purpose: str
    scope: str
    subject: str | None
    categories: Sequence[str]
    granularity: str


def _outside(terms: ConsentTerms, recipient: str, feed: FeedShape) -> str | None:
    """Why ``feed`` is outside the consent ``terms`` (None: it is within)."""
    coarse_enough = (
        feed.granularity in GRANULARITY_S
        and GRANULARITY_S[feed.granularity] >= GRANULARITY_S[terms.granularity]
    )
    reasons = [
        (terms.recipient != recipient, f"it was given to {terms.recipient}"),
        (feed.scope != "subject" or feed.subject != terms.customer, "it covers another customer"),
        (feed.purpose not in terms.purposes, f"it is for {', '.join(terms.purposes)}"),
        (not set(feed.categories) <= set(terms.categories),
         f"it names {', '.join(terms.categories)}"),
        (not coarse_enough, f"it allows {terms.granularity} at the finest"),
    ]  # fmt: skip
    return next((why for outside, why in reasons if outside), None)


def check_within(
    session: Session,
    consents: ConsentService,
    narrowing: Narrowing,
    recipient: str,
    feed: FeedShape,
) -> None:
    """Refuse (``InsufficientScope``, 403) a feed outside the token's narrowing."""
    if narrowing.purposes is not None and feed.purpose not in narrowing.purposes:
        named = " ".join(PURPOSE_PREFIX + p for p in sorted(narrowing.purposes))
        raise InsufficientScope(
            [PURPOSE_PREFIX + feed.purpose],
            f"the access token is narrowed to {named}; this feed is for "
            f"{PURPOSE_PREFIX}{feed.purpose}",
        )
    if narrowing.consents is None:
        return
    terms = {
        record.terms.consent_id: record.terms
        for record in consents.consents(session, recipient=recipient, everything=True)
    }
    why: str | None = ""
    for consent_id in sorted(narrowing.consents):
        found = terms.get(consent_id)
        why = _outside(found, recipient, feed) if found else "no such consent was given to you"
        if why is None:
            return
    named = " ".join(CONSENT_PREFIX + c for c in sorted(narrowing.consents))
    raise InsufficientScope(
        sorted(CONSENT_PREFIX + c for c in narrowing.consents),
        f"the access token is narrowed to {named} and this feed is outside it: {why}",
    )
