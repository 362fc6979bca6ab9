"""Which consents cover a release (R3.4, R3.5, C2.2): deny-by-default for every piece of scope,
expiry at the boundary microsecond, withdrawal effective at once, state only from events."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger import (
    ChainError,
    ConsentChanges,
    ConsentTerms,
    Give,
    InvalidConsent,
    LedgerState,
    Modify,
    Status,
    Withdraw,
)
from consent_ledger.vocabulary import GRANULARITY_S
from tests.consent_ledger.factories import T0, append, release, request

EXPIRES = T0 + timedelta(days=30)
US = timedelta(microseconds=1)


def _query(**changes: Any) -> dict[str, Any]:
    """A release the factory's consent covers, decided two days in; ``changes`` alter it."""
    return release(at=T0 + timedelta(days=2)) | changes


@pytest.fixture
def ledger() -> tuple[LedgerState, ConsentTerms]:
    state = LedgerState()
    (event,) = append(state, [Give(request())])
    assert event.terms is not None
    return state, event.terms


def test_R3_4_a_consent_naming_the_whole_scope_covers_the_release(
    ledger: tuple[LedgerState, ConsentTerms],
) -> None:
    state, terms = ledger
    assert state.covering(**_query()) == [terms]


@pytest.mark.parametrize(
    "missing",
    [
        {"purpose": "marketing"},
        {"purpose": "no_such_purpose"},
        {"category": "generation"},
        {"granularity": "30min"},
        {"granularity": "15min"},
        {"granularity": "weekly"},
        {"recipient": "other-energy"},
        {"customer": "C-2"},
        {"period_from": T0 - timedelta(days=90) - US},
        {"period_to": EXPIRES + US},
        {"period_from": T0 + timedelta(days=2), "period_to": T0 + timedelta(days=1)},
    ],
    ids=[
        "other_purpose",
        "unknown_purpose",
        "other_category",
        "finer_granularity",
        "finest_granularity",
        "unknown_granularity",
        "other_recipient",
        "other_customer",
        "period_before_history_window",
        "period_after_expiry",
        "empty_period",
    ],
)
def test_R3_4_R3_5_C2_2_deny_by_default_when_any_piece_of_scope_is_missing(
    ledger: tuple[LedgerState, ConsentTerms], missing: dict[str, Any]
) -> None:
    state, terms = ledger
    assert state.covering(**_query()) == [terms]  # the same release, whole, is covered
    assert state.covering(**_query(**missing)) == []


@pytest.mark.parametrize("granularity", ["hourly", "daily", "monthly"])
def test_equal_or_coarser_granularity_is_covered(
    ledger: tuple[LedgerState, ConsentTerms], granularity: str
) -> None:
    state, terms = ledger
    assert state.covering(**_query(granularity=granularity)) == [terms]


def test_R3_4_expiry_is_evaluated_at_decision_time_to_the_microsecond(
    ledger: tuple[LedgerState, ConsentTerms],
) -> None:
    state, terms = ledger
    assert state.covering(**_query(period_to=EXPIRES, at=EXPIRES - US)) == [terms]
    assert state.covering(**_query(period_to=EXPIRES, at=EXPIRES)) == []
    assert state.covering(**_query(at=EXPIRES + timedelta(days=1))) == []
    assert state.active_for_customer("C-1", EXPIRES - US) == [terms]
    assert state.active_for_customer("C-1", EXPIRES) == []
    assert state.get(terms.consent_id) is not None  # still on record, only not in force


def test_history_window_starts_history_days_before_the_consent_was_given(
    ledger: tuple[LedgerState, ConsentTerms],
) -> None:
    state, terms = ledger
    start = T0 - timedelta(days=90)
    assert terms.history_start == start
    assert state.covering(**_query(period_from=start)) == [terms]
    assert state.covering(**_query(period_from=start - US)) == []


def test_R3_4_withdrawal_is_effective_for_the_very_next_query(
    ledger: tuple[LedgerState, ConsentTerms],
) -> None:
    state, terms = ledger
    assert state.covering(**_query()) == [terms]
    append(state, [Withdraw(terms.consent_id)], at=T0 + timedelta(days=1))
    assert state.covering(**_query()) == []
    assert state.active_for_customer("C-1", T0 + timedelta(days=1)) == []
    record = state.get(terms.consent_id)
    assert record is not None and record.status is Status.withdrawn


def test_a_modification_replaces_the_scope(ledger: tuple[LedgerState, ConsentTerms]) -> None:
    state, terms = ledger
    changes = ConsentChanges(purposes=["energy_efficiency_research"], granularity="daily")
    (event,) = append(state, [Modify(terms.consent_id, changes)], at=T0 + timedelta(hours=1))
    assert state.covering(**_query()) == []  # old purpose and hourly are gone
    research = _query(purpose="energy_efficiency_research", granularity="daily")
    assert state.covering(**research) == [event.terms]
    assert event.terms is not None and event.terms.given_at == T0  # when first given


def test_two_consents_of_one_pair_both_cover(ledger: tuple[LedgerState, ConsentTerms]) -> None:
    state, terms = ledger
    (other,) = append(state, [Give(request(granularity="daily", history_days=0))])
    assert state.covering(**_query(granularity="daily")) == [terms]  # history 7 days back
    found = state.covering(**_query(granularity="daily", period_from=T0))
    assert found == [terms, other.terms]


def test_state_changes_only_by_the_next_event_of_the_chain(
    ledger: tuple[LedgerState, ConsentTerms],
) -> None:
    state, terms = ledger
    (foreign,) = append(LedgerState(), [Give(request())])
    with pytest.raises(ChainError, match="does not follow the head"):
        state.apply(foreign)  # seq 1 again, from another ledger
    with pytest.raises(ChainError, match="does not follow the head"):
        state.apply(replace(foreign, seq=2))  # the right number, linked to the wrong event
    linked = replace(foreign, seq=2, prev_hash=state.head_hash, consent_id="cn_unknown")
    with pytest.raises(InvalidConsent, match=r"terms of .* in an event of cn_unknown"):
        state.apply(linked)
    assert state.head_seq == 1
    assert state.covering(**_query()) == [terms]


def test_a_state_rebuilt_from_the_events_equals_the_live_one() -> None:
    live = LedgerState()
    events = append(live, [Give(request()), Give(request(customer="C-2"))])
    events += append(live, [Withdraw(events[0].consent_id)], at=T0 + timedelta(hours=2))
    rebuilt = LedgerState.from_events(events)
    assert (rebuilt.head_seq, rebuilt.head_hash) == (3, events[-1].hash)
    assert list(rebuilt.records()) == list(live.records())
    assert [r.status for r in rebuilt.records()] == [Status.withdrawn, Status.active]
    assert rebuilt.covering(**_query(customer="C-2")) == [events[1].terms]
    assert rebuilt.active_count() == live.active_count() == 1


# ---- a property: covering equals the definition, on random ledgers and queries ------------

_PURPOSES = ["personalised_service", "demand_response", "marketing"]
_CATEGORIES = ["consumption", "generation"]
_GRANULARITIES = list(GRANULARITY_S)


@st.composite
def _consents(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "customer": draw(st.sampled_from(["C-1", "C-2"])),
        "recipient": draw(st.sampled_from(["acme-energy", "other-energy"])),
        "purposes": draw(st.sets(st.sampled_from(_PURPOSES), min_size=1)),
        "categories": draw(st.sets(st.sampled_from(_CATEGORIES), min_size=1)),
        "granularity": draw(st.sampled_from(_GRANULARITIES)),
        "history_days": draw(st.integers(0, 30)),
        "expires_at": T0 + timedelta(hours=draw(st.integers(1, 24 * 40))),
    }


def _covers(terms: ConsentTerms, q: dict[str, Any]) -> bool:
    """The definition, written out plainly."""
    return (
        terms.customer == q["customer"]
        and terms.recipient == q["recipient"]
        and q["purpose"] in terms.purposes
        and q["category"] in terms.categories
        and GRANULARITY_S[q["granularity"]] >= GRANULARITY_S[terms.granularity]
        and q["period_from"] <= q["period_to"]
        and q["period_from"] >= terms.given_at - timedelta(days=terms.history_days)
        and q["period_to"] <= terms.expires_at
        and q["at"] < terms.expires_at
    )


@st.composite
def _releases(draw: st.DrawFn, consents: list[dict[str, Any]]) -> dict[str, Any]:
    """A release near one of the consents, so that some are covered and some just miss."""
    near = draw(st.sampled_from(consents))
    hours = int((near["expires_at"] - T0) / timedelta(hours=1))
    back = near["history_days"] * 24
    return {
        "customer": draw(st.sampled_from([near["customer"], "C-1", "C-2"])),
        "recipient": draw(st.sampled_from([near["recipient"], "acme-energy", "other-energy"])),
        "purpose": draw(st.sampled_from([*near["purposes"], *_PURPOSES])),
        "category": draw(st.sampled_from([*near["categories"], *_CATEGORIES])),
        "granularity": draw(st.sampled_from(_GRANULARITIES)),
        "period_from": T0 + timedelta(hours=draw(st.integers(-back - 2, 2))),
        "period_to": T0 + timedelta(hours=draw(st.integers(0, hours + 2))),
        "at": T0 + timedelta(hours=draw(st.integers(0, hours + 2))),
    }


@settings(max_examples=300, deadline=None)
@given(
    consents=st.lists(_consents(), min_size=1, max_size=8),
    withdrawn=st.sets(st.integers(0, 7)),
    data=st.data(),
)
def test_R3_4_covering_is_exactly_the_definition(
    consents: list[dict[str, Any]], withdrawn: set[int], data: st.DataObject
) -> None:
    state = LedgerState()
    events = append(state, [Give(request(**c)) for c in consents])
    ids = [event.consent_id for event in events]
    closing = [Withdraw(ids[i]) for i in sorted(withdrawn) if i < len(ids)]
    append(state, closing, at=T0 + timedelta(minutes=1))
    live = {ids[i] for i in range(len(ids)) if i not in withdrawn}
    given_terms = [e.terms for e in events if e.terms is not None and e.consent_id in live]
    for q in data.draw(st.lists(_releases(consents), min_size=1, max_size=10)):
        assert state.covering(**q) == [terms for terms in given_terms if _covers(terms, q)]
