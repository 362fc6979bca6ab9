"""The current consents, derived only by applying the ledger's events in order.

Nothing outside sets a consent's state: ``apply`` takes the next event of the chain (its
sequence number and previous hash must follow the head) and checks the transition, so a state
is always the fold of a valid prefix of the ledger. Active consents are indexed by
(customer, recipient), which makes ``covering`` a dict lookup and a scan of that one pair's
consents (usually one), a few microseconds however many customers there are.

Expiry is evaluated when asked (``at``), not when an ``expired`` event is written: a consent
whose expiry has passed covers nothing even if no expiry event was appended yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from broker.kit.clock import to_rfc3339
from consent_ledger.errors import ChainError, ConsentClosed, InvalidConsent, UnknownConsent
from consent_ledger.events import CARRIES_TERMS, GENESIS, ConsentEvent, Kind
from consent_ledger.terms import ConsentTerms
from consent_ledger.vocabulary import GRANULARITY_S


class Status(StrEnum):
    active = "active"
    withdrawn = "withdrawn"
    expired = "expired"


STATUS_AFTER = {
    Kind.given: Status.active,
    Kind.modified: Status.active,
    Kind.withdrawn: Status.withdrawn,
    Kind.expired: Status.expired,
}
"""What each kind of event makes of a consent."""


@dataclass(frozen=True)
class ConsentRecord:
    """A consent's latest terms and what its last event made of it."""

    terms: ConsentTerms
    status: Status
    last_seq: int
    updated_at: datetime


class _Active:
    """An active consent with its scope laid out for ``covering``."""

    __slots__ = ("categories", "expires_at", "finest_s", "history_start", "purposes", "terms")

    def __init__(self, terms: ConsentTerms) -> None:
        self.terms = terms
        self.purposes = terms.purposes  # a few names: a tuple is as quick to search as a set
        self.categories = terms.categories
        self.finest_s = GRANULARITY_S[terms.granularity]
        self.history_start = terms.history_start
        self.expires_at = terms.expires_at


def check_transition(
    record: ConsentRecord | None, kind: Kind, consent_id: str, terms: ConsentTerms | None
) -> None:
    """Refuse an event that cannot follow ``record`` (the consent's state before it)."""
    if (terms is not None) != (kind in CARRIES_TERMS):
        raise InvalidConsent(f"a {kind} event {'needs' if terms is None else 'has no'} terms")
    if terms is not None and terms.consent_id != consent_id:
        raise InvalidConsent(f"terms of {terms.consent_id} in an event of {consent_id}")
    if kind is Kind.given:
        if record is not None:
            raise InvalidConsent(f"consent {consent_id} already exists")
        return
    active = require_active(record, consent_id)
    if terms is not None:
        _check_same_parties(active.terms, terms)


def require_active(record: ConsentRecord | None, consent_id: str) -> ConsentRecord:
    """``record`` if the consent exists and is neither withdrawn nor expired."""
    if record is None:
        raise UnknownConsent(f"no consent {consent_id}")
    if record.status is not Status.active:
        raise ConsentClosed(
            f"consent {consent_id} was {record.status} at {to_rfc3339(record.updated_at)}"
        )
    return record


def _check_same_parties(before: ConsentTerms, after: ConsentTerms) -> None:
    for name in ("customer", "recipient", "controller", "given_at"):
        if getattr(before, name) != getattr(after, name):
            raise InvalidConsent(
                f"a modification of {before.consent_id} cannot change its {name}; "
                "give a new consent instead"
            )


def check_expiry_reached(record: ConsentRecord, at: datetime) -> None:
    if at < record.terms.expires_at:
        raise InvalidConsent(
            f"consent {record.terms.consent_id} expires at "
            f"{to_rfc3339(record.terms.expires_at)}, not before; it cannot expire at "
            f"{to_rfc3339(at)}"
        )


class LedgerState:
    def __init__(self) -> None:
        self._head_seq = 0
        self._head_hash = GENESIS
        self._records: dict[str, ConsentRecord] = {}
        self._by_pair: dict[tuple[str, str], dict[str, _Active]] = {}
        self._by_customer: dict[str, dict[str, ConsentTerms]] = {}

    @classmethod
    def from_events(cls, events: Iterable[ConsentEvent]) -> LedgerState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    @property
    def head_seq(self) -> int:
        """The sequence number of the last event applied (0: none)."""
        return self._head_seq

    @property
    def head_hash(self) -> bytes:
        return self._head_hash

    def apply(self, event: ConsentEvent) -> None:
        """Apply the next event of the chain; nothing changes when it is refused."""
        if event.seq != self._head_seq + 1 or event.prev_hash != self._head_hash:
            raise ChainError(
                f"consent event {event.seq} does not follow the head (seq {self._head_seq})"
            )
        record = self._records.get(event.consent_id)
        check_transition(record, event.kind, event.consent_id, event.terms)
        if event.kind is Kind.expired:
            assert record is not None
            check_expiry_reached(record, event.at)
        self._store(record, event)
        self._head_seq, self._head_hash = event.seq, event.hash

    def _store(self, record: ConsentRecord | None, event: ConsentEvent) -> None:
        if event.terms is not None:
            terms = event.terms
        else:
            assert record is not None  # check_transition refused a closing event without one
            terms = record.terms
        status = STATUS_AFTER[event.kind]
        self._records[event.consent_id] = ConsentRecord(terms, status, event.seq, event.at)
        pair = self._by_pair.setdefault((terms.customer, terms.recipient), {})
        mine = self._by_customer.setdefault(terms.customer, {})
        if status is Status.active:
            pair[terms.consent_id] = _Active(terms)
            mine[terms.consent_id] = terms
        else:
            del pair[terms.consent_id], mine[terms.consent_id]

    # ---- queries -------------------------------------------------------------------------

    def get(self, consent_id: str) -> ConsentRecord | None:
        return self._records.get(consent_id)

    def records(self) -> Iterator[ConsentRecord]:
        """Every consent ever given, in the order first given."""
        return iter(self._records.values())

    def covering(
        self,
        customer: str,
        recipient: str,
        purpose: str,
        category: str,
        granularity: str,
        period_from: datetime,
        period_to: datetime,
        at: datetime,
    ) -> list[ConsentTerms]:
        """The consents that allow releasing ``customer``'s data of ``category`` for the
        period [``period_from``, ``period_to``] at ``granularity`` to ``recipient`` for
        ``purpose``, as decided at ``at``. Deny by default: each must be active (given or
        modified, neither withdrawn nor expired) and name the purpose and the category; the
        granularity must be its finest or coarser; ``period_from`` must lie in its history
        window (not before ``given_at - history_days``) and ``period_to`` not after its expiry.

        Expiry boundary: a consent is valid while ``at < expires_at``; at ``expires_at`` itself
        it no longer covers anything. An unknown granularity or an empty period covers nothing.
        """
        bucket = self._by_pair.get((customer, recipient))
        wanted = GRANULARITY_S.get(granularity)
        if not bucket or wanted is None or period_from > period_to:
            return []
        return [
            a.terms
            for a in bucket.values()
            if at < a.expires_at
            and purpose in a.purposes
            and category in a.categories
            and wanted >= a.finest_s
            and period_from >= a.history_start
            and period_to <= a.expires_at
        ]

    def active_for_customer(self, customer: str, at: datetime) -> list[ConsentTerms]:
        """The customer's consents in force at ``at`` (same expiry boundary as ``covering``)."""
        mine = self._by_customer.get(customer, {})
        return [terms for terms in mine.values() if at < terms.expires_at]

    def due(self, at: datetime) -> list[ConsentTerms]:
        """Active consents whose expiry has come at ``at`` but have no ``expired`` event yet."""
        return [
            record.terms
            for record in self._records.values()
            if record.status is Status.active and record.terms.expires_at <= at
        ]

    def active_count(self) -> int:
        return sum(len(mine) for mine in self._by_customer.values())
