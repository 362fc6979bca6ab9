"""Requests the ledger must refuse, refused with a clear message before any event exists
(R3.4): nothing reaches the draft's events and the state does not move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from consent_ledger import (
    DEFAULT_VOCABULARY,
    ConsentChanges,
    ConsentClosed,
    ConsentError,
    Draft,
    Expire,
    Give,
    InvalidConsent,
    Kind,
    LedgerState,
    Modify,
    Operation,
    UnknownConsent,
    Vocabulary,
    Withdraw,
)
from tests.consent_ledger.factories import T0, append, request

EXPIRES = T0 + timedelta(days=30)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"expires_at": T0 - timedelta(days=1)}, "is not after 2026-11-24T12:00:00.000000Z"),
        ({"expires_at": T0}, "is not after 2026-11-24T12:00:00.000000Z, when the consent"),
        ({"expires_at": T0 + timedelta(days=365, microseconds=1)}, "more than 365 days after"),
        ({"expires_at": datetime(2027, 1, 1)}, "has no time zone"),
        ({"purposes": ["selling_data"]}, "unknown purpose 'selling_data' (known: billing,"),
        ({"categories": ["bank_details"]}, "unknown category 'bank_details'"),
        ({"granularity": "1min"}, "unknown granularity '1min' (known: 15min, 30min,"),
        ({"purposes": []}, "at least one purpose is needed"),
        ({"categories": []}, "at least one category is needed"),
        ({"history_days": -1}, "history days must be 0 to 3660, not -1"),
        ({"history_days": 100_000}, "history days must be 0 to 3660"),
        ({"notice_hash": "md5:abc"}, "is not sha256:<64 hex digits>"),
        ({"customer": ""}, "customer must be 1 to 64 characters"),
        ({"recipient": " "}, "recipient must be 1 to 120 characters"),
    ],
    ids=[
        "expiry_in_the_past",
        "expiry_at_given_time",
        "expiry_beyond_max_days",
        "naive_expiry",
        "unknown_purpose",
        "unknown_category",
        "unknown_granularity",
        "no_purpose",
        "no_category",
        "negative_history",
        "history_beyond_bound",
        "bad_notice_hash",
        "empty_customer",
        "blank_recipient",
    ],
)
def test_R3_4_invalid_consent_is_refused_with_a_clear_message(
    changes: dict[str, Any], message: str
) -> None:
    state = LedgerState()
    draft = Draft(state, DEFAULT_VOCABULARY, 365)
    with pytest.raises(InvalidConsent) as refused:
        draft.add(Give(request(**changes)), T0, "test")
    assert message in str(refused.value)
    assert draft.events == []
    assert (state.head_seq, list(state.records())) == (0, [])


def test_every_problem_is_named_at_once() -> None:
    bad = request(purposes=["x"], categories=["y"], history_days=-2, expires_at=T0)
    with pytest.raises(InvalidConsent) as refused:
        Draft(LedgerState(), DEFAULT_VOCABULARY, 365).add(Give(bad), T0, "test")
    assert str(refused.value).count(";") == 3


def test_expiry_exactly_at_the_maximum_is_accepted_and_the_maximum_is_a_parameter() -> None:
    at_max = request(expires_at=T0 + timedelta(days=365))
    assert Draft(LedgerState(), DEFAULT_VOCABULARY, 365).add(Give(at_max), T0, "test").seq == 1
    with pytest.raises(InvalidConsent, match="more than 30 days after"):
        Draft(LedgerState(), DEFAULT_VOCABULARY, 30).add(Give(at_max), T0, "test")


def test_the_vocabulary_comes_from_the_caller() -> None:
    narrow = Vocabulary(purposes=frozenset({"billing"}), categories=frozenset({"consumption"}))
    with pytest.raises(InvalidConsent, match="unknown purpose 'personalised_service'"):
        Draft(LedgerState(), narrow, 365).add(Give(request()), T0, "test")
    billing = request(purposes=["billing"])
    assert Draft(LedgerState(), narrow, 365).add(Give(billing), T0, "test").kind is Kind.given


def test_scope_is_sorted_and_deduplicated() -> None:
    event = Draft(LedgerState(), DEFAULT_VOCABULARY, 365).add(
        Give(request(purposes=["marketing", "billing", "marketing"], categories="generation")),
        T0,
        "test",
    )
    assert event.terms is not None
    assert (event.terms.purposes, event.terms.categories) == (
        ("billing", "marketing"),
        ("generation",),
    )


@pytest.fixture
def state() -> LedgerState:
    ledger = LedgerState()
    append(ledger, [Give(request()), Give(request(customer="C-2"))])
    return ledger


def _ids(state: LedgerState) -> list[str]:
    return [record.terms.consent_id for record in state.records()]


@pytest.mark.parametrize(
    ("operation", "error", "message"),
    [
        (Withdraw("cn_nope"), UnknownConsent, "no consent cn_nope"),
        (Modify("cn_nope", ConsentChanges(history_days=1)), UnknownConsent, "no consent cn_nope"),
        (Expire("cn_nope"), UnknownConsent, "no consent cn_nope"),
    ],
    ids=["withdraw", "modify", "expire"],
)
def test_R3_4_operations_on_a_consent_that_does_not_exist_are_refused(
    state: LedgerState, operation: Operation, error: type[ConsentError], message: str
) -> None:
    draft = Draft(state, DEFAULT_VOCABULARY, 365)
    with pytest.raises(error, match=message):
        draft.add(operation, T0, "test")
    assert draft.events == []


@pytest.mark.parametrize("closing", [Withdraw, Expire])
@pytest.mark.parametrize("then", ["withdraw", "modify", "expire"])
def test_a_withdrawn_or_expired_consent_cannot_change_again(
    state: LedgerState, closing: type[Withdraw | Expire], then: str
) -> None:
    consent = _ids(state)[0]
    append(state, [closing(consent)], at=EXPIRES if closing is Expire else T0)
    following: dict[str, Operation] = {
        "withdraw": Withdraw(consent),
        "modify": Modify(consent, ConsentChanges(history_days=1)),
        "expire": Expire(consent),
    }
    head = state.head_seq
    with pytest.raises(ConsentClosed, match=f"consent {consent} was (withdrawn|expired) at"):
        append(state, [following[then]], at=EXPIRES + timedelta(days=1))
    assert state.head_seq == head


def test_expiry_before_the_expiry_time_is_refused_and_at_it_accepted(state: LedgerState) -> None:
    consent = _ids(state)[0]
    with pytest.raises(
        InvalidConsent, match=r"expires at 2026-12-24T12:00:00\.000000Z, not before"
    ):
        append(state, [Expire(consent)], at=EXPIRES - timedelta(microseconds=1))
    (event,) = append(state, [Expire(consent)], at=EXPIRES)
    assert (event.kind, event.terms) == (Kind.expired, None)


def test_a_consent_past_its_expiry_cannot_be_modified_or_withdrawn(state: LedgerState) -> None:
    consent = _ids(state)[0]
    for operation in (Withdraw(consent), Modify(consent, ConsentChanges(history_days=1))):
        with pytest.raises(ConsentClosed, match=r"expired at 2026-12-24T12:00:00\.000000Z"):
            append(state, [operation], at=EXPIRES)


def test_modifications_are_validated_and_bounded_from_their_own_time(state: LedgerState) -> None:
    consent = _ids(state)[0]
    at = T0 + timedelta(days=29)
    with pytest.raises(InvalidConsent, match="changes nothing"):
        append(state, [Modify(consent, ConsentChanges())], at=at)
    with pytest.raises(InvalidConsent, match="unknown purpose 'spying'"):
        append(state, [Modify(consent, ConsentChanges(purposes=["spying"]))], at=at)
    too_long = ConsentChanges(expires_at=at + timedelta(days=366))
    with pytest.raises(InvalidConsent, match="more than 365 days after 2026-12-23"):
        append(state, [Modify(consent, too_long)], at=at)
    assert state.head_seq == 2
    renewed = ConsentChanges(expires_at=at + timedelta(days=365))
    (event,) = append(state, [Modify(consent, renewed)], at=at)
    assert event.terms is not None
    assert (event.terms.expires_at, event.terms.given_at) == (at + timedelta(days=365), T0)


def test_a_group_sees_its_own_events_and_leaves_the_state_alone(state: LedgerState) -> None:
    draft = Draft(state, DEFAULT_VOCABULARY, 365)
    given = draft.add(Give(request(customer="C-3")), T0, "test")
    withdrawn = draft.add(Withdraw(given.consent_id), T0, "test")
    assert (withdrawn.seq, withdrawn.prev_hash) == (4, given.hash)
    with pytest.raises(ConsentClosed, match="was withdrawn"):
        draft.add(Withdraw(given.consent_id), T0, "test")
    assert state.head_seq == 2 and state.get(given.consent_id) is None
    for event in draft.events:
        state.apply(event)
    assert state.head_hash == withdrawn.hash


def test_times_in_other_zones_are_stored_in_utc() -> None:
    paris = datetime(2026, 12, 1, 13, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    event = Draft(LedgerState(), DEFAULT_VOCABULARY, 365).add(
        Give(request(expires_at=paris)), T0, "test"
    )
    assert event.terms is not None and event.terms.expires_at.tzinfo is UTC
