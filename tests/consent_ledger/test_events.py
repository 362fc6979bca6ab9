"""The hash chain: each event's hash is SHA-256(previous hash ‖ RFC 8785 body), and any change,
drop or reordering of an event is found at that event."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.kit.canonical import canonical_json
from broker.kit.clock import to_rfc3339
from consent_ledger import (
    GENESIS,
    ChainError,
    ConsentChanges,
    ConsentEvent,
    ConsentTerms,
    Give,
    InvalidConsent,
    Kind,
    LedgerState,
    Modify,
    Withdraw,
    verify_chain,
)
from consent_ledger.events import canonical_body, from_body, link, link_problem
from consent_ledger.terms import terms_to_json
from tests.consent_ledger.factories import T0, append, request


@pytest.fixture
def events() -> list[ConsentEvent]:
    state = LedgerState()
    chain = append(state, [Give(request()), Give(request(customer="C-2"))])
    first = chain[0].consent_id
    chain += append(
        state, [Modify(first, ConsentChanges(granularity="daily"))], T0 + timedelta(days=1)
    )
    chain += append(state, [Withdraw(first)], T0 + timedelta(days=2))
    return chain


def test_hash_is_sha256_of_previous_hash_and_canonical_body(events: list[ConsentEvent]) -> None:
    assert events[0].prev_hash == GENESIS == bytes(32)
    for before, event in zip([None, *events], events, strict=False):
        prev = GENESIS if before is None else before.hash
        assert event.prev_hash == prev
        assert event.hash == hashlib.sha256(prev + event.body).digest()
        assert event.body == rfc8785.dumps(json.loads(event.body))
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert json.loads(events[3].body)["terms"] is None  # a withdrawal carries no terms


def test_an_intact_chain_verifies(events: list[ConsentEvent]) -> None:
    assert verify_chain(events) is None
    assert verify_chain([]) is None


def test_chain_detects_a_changed_event(events: list[ConsentEvent]) -> None:
    terms = events[1].terms
    assert terms is not None
    wider = replace(events[1], terms=replace(terms, purposes=("marketing",)))
    assert verify_chain([events[0], wider, *events[2:]]) == 1
    assert link_problem(wider, 2, events[0].hash) == "body is not the canonical form of the event"
    edited = replace(events[2], body=events[2].body.replace(b'"daily"', b'"15min"'))
    assert verify_chain([*events[:2], edited, events[3]]) == 2
    assert link_problem(edited, 3, events[1].hash) == "body is not the canonical form of the event"


def test_chain_detects_a_rehashed_event_at_the_next_link(events: list[ConsentEvent]) -> None:
    """Recomputing the edited event's own hash moves the break to the event after it."""
    terms = events[1].terms
    assert terms is not None
    forged = link(GENESIS, 1, events[0].consent_id, Kind.given, T0, "attacker", terms)
    forged = replace(forged, prev_hash=events[0].prev_hash)
    assert verify_chain([forged, *events[1:]]) == 1
    assert link_problem(events[1], 2, forged.hash) == (
        "previous hash does not match the event before it"
    )


def test_chain_detects_dropped_and_reordered_events(events: list[ConsentEvent]) -> None:
    assert verify_chain([events[0], *events[2:]]) == 1
    assert verify_chain([events[1], events[0], *events[2:]]) == 0
    assert verify_chain(events[1:]) == 0


def test_stored_bodies_read_back_to_the_same_events(events: list[ConsentEvent]) -> None:
    for event in events:
        assert from_body(event.body, event.prev_hash, event.hash) == event


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"v":2}',
        b'{"actor":"a","at":"2026-11-24T12:00:00Z","consent_id":"cn_1","kind":"given",'
        b'"seq":1,"terms":null,"v":1}',
        b'{"actor":"a","at":"2026-11-24T12:00:00Z","consent_id":"cn_1","kind":"lost",'
        b'"seq":1,"terms":null,"v":1}',
        b'{"actor":"a","at":"2026-11-24T12:00:00","consent_id":"cn_1","kind":"withdrawn",'
        b'"seq":1,"terms":null,"v":1}',
        b'{"actor":1,"at":"2026-11-24T12:00:00Z","consent_id":"cn_1","kind":"withdrawn",'
        b'"seq":1,"terms":null,"v":1}',
    ],
    ids=["not_json", "array", "other_version", "given_without_terms", "unknown_kind",
         "time_without_zone", "actor_not_a_string"],
)  # fmt: skip
def test_an_unreadable_stored_body_is_a_chain_error(body: bytes) -> None:
    with pytest.raises(ChainError, match="stored consent event cannot be read"):
        from_body(body, GENESIS, bytes(32))


def test_a_modification_cannot_move_a_consent_to_another_party(
    events: list[ConsentEvent],
) -> None:
    state = LedgerState.from_events(events[:2])
    terms = events[1].terms
    assert terms is not None
    moved = replace(terms, recipient="other-energy")
    event = link(state.head_hash, 3, terms.consent_id, Kind.modified, T0, "test", moved)
    with pytest.raises(InvalidConsent, match="cannot change its recipient"):
        state.apply(event)
    assert state.head_seq == 2


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    strings=st.lists(_text, min_size=8, max_size=8),
    scope=st.tuples(st.lists(_text, max_size=3), st.lists(_text, max_size=3)),
    numbers=st.tuples(st.integers(0, 2**53 - 1), st.integers(1, 2**40)),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    times=st.tuples(_times, _times, _times),
)
def test_body_is_rfc8785_for_any_terms(
    strings: list[str],
    scope: tuple[list[str], list[str]],
    numbers: tuple[int, int],
    flags: tuple[bool, bool, bool],
    times: tuple[datetime, datetime, datetime],
) -> None:
    """The hand-written body equals the canonicaliser's output on the same object, for any
    text (escapes, non-ASCII), numbers, flags and times."""
    consent_id, customer, controller, recipient, granularity, notice, method, actor = strings
    terms = ConsentTerms(
        consent_id, customer, controller, recipient, tuple(scope[0]), tuple(scope[1]),
        granularity, numbers[0], flags[0], flags[1], times[0], notice, method, times[1],
    )  # fmt: skip
    kind = Kind.given if flags[2] else Kind.withdrawn
    expected = {
        "actor": actor,
        "at": to_rfc3339(times[2]),
        "consent_id": consent_id,
        "kind": kind.value,
        "seq": numbers[1],
        "terms": terms_to_json(terms) if flags[2] else None,
        "v": 1,
    }
    body = canonical_body(
        numbers[1], consent_id, kind, times[2], actor, terms if flags[2] else None
    )
    assert body == canonical_json(expected) == rfc8785.dumps(expected)
    assert terms_to_json(terms)["given_at"] == to_rfc3339(times[1])
