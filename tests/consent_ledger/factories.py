"""Typed factories for consent tests: a request with every field filled, and a ledger built
through drafts as the broker builds it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from consent_ledger import (
    DEFAULT_VOCABULARY,
    ConsentEvent,
    ConsentRequest,
    Draft,
    LedgerState,
    Operation,
    notice_hash,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NOTICE = notice_hash(b"We share your half-hourly consumption with Acme Energy for tips.")


def request(**changes: Any) -> ConsentRequest:
    """A valid request (customer C-1 to recipient acme-energy, 30 days); ``changes`` override."""
    base = ConsentRequest(
        customer="C-1",
        recipient="acme-energy",
        purposes=("personalised_service",),
        categories=("consumption",),
        granularity="hourly",
        expires_at=T0 + timedelta(days=30),
        notice_hash=NOTICE,
        collection_method="oauth_consent_page",
        controller="utility.example",
        history_days=90,
        identified=False,
        explicit=True,
    )
    return replace(base, **changes)


def release(**changes: Any) -> dict[str, Any]:
    """The arguments of a ``covering`` query that ``request()``'s consent covers (without
    ``at``); ``changes`` alter pieces of it."""
    base: dict[str, Any] = {
        "customer": "C-1",
        "recipient": "acme-energy",
        "purpose": "personalised_service",
        "category": "consumption",
        "granularity": "hourly",
        "period_from": T0 - timedelta(days=7),
        "period_to": T0 + timedelta(days=1),
    }
    return base | changes


def append(
    state: LedgerState, operations: Sequence[Operation], at: datetime = T0, actor: str = "test"
) -> list[ConsentEvent]:
    """Draft ``operations`` at ``at`` and apply them, as a committed group would be."""
    draft = Draft(state, DEFAULT_VOCABULARY, 365)
    events = [draft.add(operation, at, actor) for operation in operations]
    for event in events:
        state.apply(event)
    return events
