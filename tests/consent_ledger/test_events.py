"""The hash chain: each event's hash is SHA-256(previous hash ‖ RFC 8785 body), and any change,
drop or reordering of an event is found at that event."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import timedelta

import pytest
import rfc8785

from consent_ledger import (
    GENESIS,
    ChainError,
    ConsentChanges,
    ConsentEvent,
    Give,
    InvalidConsent,
    Kind,
    LedgerState,
    Modify,
    Withdraw,
    verify_chain,
)
from consent_ledger.events import from_body, link, link_problem
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
