"""Turning requests into chained events, checked before anything is written.

A ``Draft`` builds a group of events on top of a ``LedgerState`` without touching it: each
operation is validated against the state as the group so far leaves it (a consent given and
withdrawn in one group works; a second withdrawal is refused), then linked to the previous
event. The caller writes ``draft.events`` in one transaction; the state learns of them only by
applying them once they are stored, so a rolled-back transaction never leaves the state ahead
of the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from broker.kit.clock import to_rfc3339
from broker.kit.ids import new_id
from consent_ledger.errors import ConsentClosed
from consent_ledger.events import ConsentEvent, Kind, link
from consent_ledger.state import (
    STATUS_AFTER,
    ConsentRecord,
    LedgerState,
    check_expiry_reached,
    check_transition,
    require_active,
)
from consent_ledger.terms import ConsentChanges, ConsentRequest, ConsentTerms, validate
from consent_ledger.vocabulary import Vocabulary


@dataclass(frozen=True)
class Give:
    request: ConsentRequest


@dataclass(frozen=True)
class Modify:
    consent_id: str
    changes: ConsentChanges


@dataclass(frozen=True)
class Withdraw:
    consent_id: str


@dataclass(frozen=True)
class Expire:
    consent_id: str


Operation = Give | Modify | Withdraw | Expire


class Draft:
    """Events to append after ``state``'s head; ``state`` itself is only read."""

    def __init__(self, state: LedgerState, vocabulary: Vocabulary, max_days: int) -> None:
        self._state = state
        self._vocabulary = vocabulary
        self._max_days = max_days
        self._seq = state.head_seq
        self._prev = state.head_hash
        self._changed: dict[str, ConsentRecord] = {}
        self.entries: list[tuple[ConsentEvent, ConsentTerms]] = []
        """Each event with the terms it gives, or (withdrawal, expiry) ends."""

    @property
    def events(self) -> list[ConsentEvent]:
        return [event for event, _ in self.entries]

    def record(self, consent_id: str) -> ConsentRecord | None:
        """The consent as the group so far leaves it."""
        return self._changed.get(consent_id) or self._state.get(consent_id)

    def add(self, operation: Operation, at: datetime, actor: str) -> ConsentEvent:
        match operation:
            case Give(request):
                return self.give(request, at, actor)
            case Modify(consent_id, changes):
                return self.modify(consent_id, changes, at, actor)
            case Withdraw(consent_id):
                return self.close(consent_id, Kind.withdrawn, at, actor)
            case Expire(consent_id):
                return self.close(consent_id, Kind.expired, at, actor)

    def give(self, request: ConsentRequest, at: datetime, actor: str) -> ConsentEvent:
        terms = request.terms(new_id("cn"), at)
        validate(terms, at, self._vocabulary, self._max_days)
        return self._append(Kind.given, terms.consent_id, terms, at, actor)

    def modify(
        self, consent_id: str, changes: ConsentChanges, at: datetime, actor: str
    ) -> ConsentEvent:
        current = self._open(consent_id, Kind.modified, at)
        terms = changes.apply(current.terms)
        validate(terms, at, self._vocabulary, self._max_days)
        return self._append(Kind.modified, consent_id, terms, at, actor)

    def close(self, consent_id: str, kind: Kind, at: datetime, actor: str) -> ConsentEvent:
        """A withdrawal, or an expiry (only once the expiry time has come)."""
        record = self._open(consent_id, kind, at)
        if kind is Kind.expired:
            check_expiry_reached(record, at)
        return self._append(kind, consent_id, None, at, actor)

    def _open(self, consent_id: str, kind: Kind, at: datetime) -> ConsentRecord:
        """The consent's record, refused unless it is active; modifying or withdrawing a
        consent whose expiry has passed is refused too (there is nothing left to change)."""
        record = require_active(self.record(consent_id), consent_id)
        if kind is not Kind.expired and record.terms.expires_at <= at:
            raise ConsentClosed(
                f"consent {consent_id} expired at {to_rfc3339(record.terms.expires_at)}; "
                f"it cannot be {kind} any more"
            )
        return record

    def _append(
        self, kind: Kind, consent_id: str, terms: ConsentTerms | None, at: datetime, actor: str
    ) -> ConsentEvent:
        before = self.record(consent_id)
        check_transition(before, kind, consent_id, terms)
        self._seq += 1
        event = link(self._prev, self._seq, consent_id, kind, at, actor, terms)
        if terms is None:
            assert before is not None  # check_transition refused a closing event without one
            terms = before.terms
        self._changed[consent_id] = ConsentRecord(terms, STATUS_AFTER[kind], event.seq, at)
        self._prev = event.hash
        self.entries.append((event, terms))
        return event
