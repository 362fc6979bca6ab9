"""Facts from the consent ledger: the consents that may cover a request, in the policy's shape.

The ledger answers per category (``LedgerState.covering``); a request names several, and only
a consent that covers every one of them covers the request, so the answer is the intersection.
The policy checks each consent again (defence in depth: the ledger narrows, the policy
decides). An aggregate request names no customer and gets no consents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.policy.decision import ReleaseRequest, consent_fact
from consent_ledger import ConsentTerms, LedgerState


def fact_of(terms: ConsentTerms) -> dict[str, Any]:
    return consent_fact(
        terms.consent_id,
        terms.recipient,
        terms.purposes,
        terms.categories,
        terms.granularity,
        terms.history_days,
        terms.identified,
        terms.explicit,
        terms.given_at,
        terms.expires_at,
    )


def covering_consents(
    state: LedgerState, request: ReleaseRequest, at: datetime
) -> list[dict[str, Any]]:
    """The consents in force at ``at`` that cover every category of ``request``."""
    if request.subject is None or not request.categories:
        return []
    found: dict[str, ConsentTerms] | None = None
    for category in request.categories:
        terms = state.covering(
            request.subject,
            request.recipient_id,
            request.purpose,
            category,
            request.granularity,
            request.period_from,
            request.period_to,
            at,
        )
        these = {t.consent_id: t for t in terms}
        found = these if found is None else {k: v for k, v in found.items() if k in these}
        if not found:
            return []
    return [fact_of(t) for _, t in sorted((found or {}).items())]
