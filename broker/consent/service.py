"""The consent service: appends events in the caller's transaction, answers covering queries.

Each append is one group under one lock of the ledger's head (``store.lock_head``): the state
is brought up to the stored head, the whole group is drafted and validated on it, and the
customer and recipient of each new consent are checked to exist (``broker.consent.parties``), so
an invalid request writes nothing; the events are inserted and entered in the audit log
(``consent.given`` ... ``consent.expired``, the customer only as a keyed hash); receipts
are signed when the caller asks for them, after its commit if it likes.

The cached state never runs ahead of what is committed: the service applies its
own events only once the caller's transaction has committed (a session hook; a rollback drops
them), and everyone else's by reading the rows after its head (``refresh``), so a withdrawal
written by another process is seen on the next ``covering`` call.

On PostgreSQL, take the head lock (the first append) before writing other audit entries in
the same transaction; the audit log's own head lock comes after it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.event import listen
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.consent import store
from broker.consent.errors import ConsentNotFound, refusals
from broker.consent.parties import check_parties
from broker.kit.clock import Clock, to_us
from broker.storage.raw import Raw
from consent_ledger import (
    DEFAULT_VOCABULARY,
    GENESIS,
    ConsentChanges,
    ConsentError,
    ConsentEvent,
    ConsentRecord,
    ConsentRequest,
    ConsentTerms,
    Draft,
    Expire,
    Give,
    LedgerState,
    Modify,
    Operation,
    ReceiptSigner,
    Status,
    Vocabulary,
    Withdraw,
)
from consent_ledger.events import from_body, link_problem

_PENDING = "consent_events_to_learn"
AppendHook = Callable[[Session, list[tuple[str, str, str, str]], str], object]
AUDIT_TYPES = tuple(f"consent.{kind}" for kind in ("given", "modified", "withdrawn", "expired"))


class Appended:
    """An appended event and the terms it gives or ends. Its receipt is signed when first
    asked for: a caller that reads it after committing signs outside the ledger's lock, so
    concurrent appenders do not wait for each other's Ed25519 signatures."""

    __slots__ = ("_receipt", "_signer", "event", "terms")

    def __init__(self, event: ConsentEvent, terms: ConsentTerms, signer: ReceiptSigner) -> None:
        self.event, self.terms, self._signer = event, terms, signer
        self._receipt: str | None = None

    @property
    def receipt(self) -> str:
        """The customer's signed receipt (compact JWS)."""
        if self._receipt is None:
            self._receipt = self._signer.sign(self.event, self.terms)
        return self._receipt


@dataclass(frozen=True)
class ChainReport:
    events: int
    """Events checked (all of them when the chain holds)."""
    first_bad_seq: int | None = None
    problem: str | None = None


class ConsentService:
    def __init__(
        self,
        audit: AuditSink,
        clock: Clock,
        hasher: Callable[[str], str],
        signer: ReceiptSigner,
        max_days: int = 365,
        vocabulary: Vocabulary = DEFAULT_VOCABULARY,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._hash = hasher
        self.signer = signer
        self._max_days = max_days
        self._vocabulary = vocabulary
        self._state = LedgerState()
        self._lock = threading.Lock()  # the server's requests share the cached state
        self.after_append: list[AppendHook] = []
        """Run in the caller's transaction after each group is written, with (kind, consent
        id, customer, recipient) of each event and the actor: withdrawals and expiries
        propagate to recipients this way (``broker.delivery.deletion``)."""

    # ---- appending ------------------------------------------------------------------------

    def give(self, session: Session, request: ConsentRequest, actor: str) -> Appended:
        return self.append_many(session, [Give(request)], actor)[0]

    def modify(
        self, session: Session, consent_id: str, changes: ConsentChanges, actor: str
    ) -> Appended:
        return self.append_many(session, [Modify(consent_id, changes)], actor)[0]

    def withdraw(self, session: Session, consent_id: str, actor: str) -> Appended:
        return self.append_many(session, [Withdraw(consent_id)], actor)[0]

    def expire_due(
        self, session: Session, actor: str = "system", at: datetime | None = None
    ) -> list[Appended]:
        """Append an ``expired`` event for every active consent whose expiry has come."""
        at = at or self._clock.now()
        store.lock_head(session)  # nobody withdraws one of them between reading and writing
        state = self.refresh(session)
        with self._lock:
            due = [Expire(terms.consent_id) for terms in state.due(at)]
        return self.append_many(session, due, actor, at=at)

    def append_many(
        self,
        session: Session,
        operations: Sequence[Operation],
        actor: str,
        *,
        at: datetime | None = None,
    ) -> list[Appended]:
        """Append a group of events at ``at`` (default: now) in the caller's transaction; the
        whole group is validated before anything is written."""
        if not operations:
            return []
        at = at or self._clock.now()
        store.lock_head(session)
        self.refresh(session)
        with self._lock, refusals():
            draft = Draft(self._state, self._vocabulary, self._max_days)
            for operation in operations:
                draft.add(operation, at, actor)
        entries = draft.entries
        check_parties(session, [t for e, t in entries if e.kind.value == "given"])
        store.insert(session, entries)
        self._audit.record(session, [self._audit_event(e, t, actor) for e, t in entries])
        self._learn_on_commit(session, [event for event, _ in entries])
        if self.after_append:
            told = [(e.kind.value, e.consent_id, t.customer, t.recipient) for e, t in entries]
            for hook in self.after_append:
                hook(session, told, actor)
        return [Appended(event, terms, self.signer) for event, terms in entries]

    def _audit_event(self, event: ConsentEvent, terms: ConsentTerms, actor: str) -> AuditEvent:
        details = {
            "consent_id": event.consent_id,
            "event_hash": event.hash.hex(),
            "purposes": list(terms.purposes),
            "recipient": terms.recipient,
            "seq": event.seq,
        }
        return AuditEvent(f"consent.{event.kind}", actor, self._hash(terms.customer), details)

    def _learn_on_commit(self, session: Session, events: list[ConsentEvent]) -> None:
        """Apply ``events`` to the cache once the caller's transaction commits (and forget them
        if it rolls back), so the next append does not read back its own rows."""
        key = (_PENDING, id(self))
        pending = session.info.get(key)
        if pending is None:
            pending = session.info[key] = []
            listen(session, "after_commit", lambda s: self._learn(s.info.pop(key, [])))
            listen(session, "after_rollback", lambda s: s.info.pop(key, None))
        pending.extend(events)

    def _learn(self, events: list[ConsentEvent]) -> None:
        with self._lock:
            try:
                for event in events:
                    if event.seq > self._state.head_seq:  # a refresh may have read it already
                        self._state.apply(event)
            except ConsentError:  # cannot happen; if it does, rebuild from the database
                self._state = LedgerState()

    # ---- the current state -----------------------------------------------------------------

    def refresh(self, session: Session) -> LedgerState:
        """The cached state brought up to the stored head (events after the last one seen).
        Read it under no lock only where no other thread refreshes (a command, a test)."""
        with refusals():
            new = store.events_after(session, self._state.head_seq)
        with self._lock, refusals():
            for event in new:
                if event.seq > self._state.head_seq:  # another thread may have applied it
                    self._state.apply(event)
        return self._state

    def load_state(self, session: Session) -> LedgerState:
        """A state rebuilt from every stored event (the cache is left as it is)."""
        with refusals():
            return LedgerState.from_events(store.events_after(session, 0))

    def covering(
        self,
        session: Session,
        customer: str,
        recipient: str,
        purpose: str,
        category: str,
        granularity: str,
        period_from: datetime,
        period_to: datetime,
        at: datetime | None = None,
    ) -> list[ConsentTerms]:
        """``LedgerState.covering`` on the state as stored now, evaluated at ``at`` (default:
        now): a withdrawal committed by anyone before this call is seen."""
        self.refresh(session)
        when = at or self._clock.now()
        with self._lock:
            return self._state.covering(
                customer, recipient, purpose, category, granularity, period_from, period_to, when
            )

    def consents(
        self,
        session: Session,
        customer: str | None = None,
        recipient: str | None = None,
        everything: bool = False,
    ) -> list[ConsentRecord]:
        """Consents in force now (``everything``: also withdrawn and expired ones)."""
        self.refresh(session)
        now = self._clock.now()
        with self._lock:
            return [
                record
                for record in self._state.records()
                if customer in (None, record.terms.customer)
                and recipient in (None, record.terms.recipient)
                and (everything or _in_force(record, now))
            ]

    def history(self, session: Session, consent_id: str) -> list[ConsentEvent]:
        with refusals():
            events = store.events_of(session, consent_id)
        if not events:
            raise ConsentNotFound(f"no consent {consent_id}")
        return events

    # ---- verification ----------------------------------------------------------------------

    def verify(self, session: Session) -> ChainReport:
        """Check every stored event: its body is canonical and hashes, with the previous hash,
        to its hash; its columns repeat its body; it is a valid step of the ledger; and its
        hash is the one entered in the audit log when it was appended."""
        anchors = _audit_anchors(session)
        state, prev, count = LedgerState(), GENESIS, 0
        for row in store.stored_rows(session):
            count += 1
            problem = _row_problem(row, count, prev, state) or _anchor_problem(row, anchors)
            if problem is not None:
                return ChainReport(count, count, problem)
            prev = row[-1]
        return ChainReport(count)


def _in_force(record: ConsentRecord, now: datetime) -> bool:
    return record.status is Status.active and now < record.terms.expires_at


def _row_problem(row: store.StoredRow, seq: int, prev: bytes, state: LedgerState) -> str | None:
    try:
        event = from_body(row[6].encode("utf-8"), row[7], row[8])
        problem = link_problem(event, seq, prev)
        if problem is not None:
            return problem
        state.apply(event)
    except ConsentError as exc:
        return str(exc)
    record = state.get(event.consent_id)
    assert record is not None
    body_says = (seq, event.consent_id, event.kind.value, record.terms.customer)
    if row[:6] != (*body_says, record.terms.recipient, to_us(event.at)):
        return "columns do not match the body"
    return None


def _anchor_problem(row: store.StoredRow, anchors: dict[int, str]) -> str | None:
    anchored = anchors.get(row[0])
    if anchored is None:
        return "no audit entry records this event"
    if anchored != row[8].hex():
        return "hash differs from the one entered in the audit log"
    return None


def _audit_anchors(session: Session) -> dict[int, str]:
    """Consent sequence number → event hash, as the audit log recorded them."""
    marks = ",".join("?" * len(AUDIT_TYPES))
    query = f"SELECT body FROM audit_entry WHERE event_type IN ({marks})"  # noqa: S608
    anchors: dict[int, str] = {}
    for (body,) in Raw(session).query(query, AUDIT_TYPES):
        details = json.loads(body)["details"]
        anchors.setdefault(details["seq"], details["event_hash"])
    return anchors
