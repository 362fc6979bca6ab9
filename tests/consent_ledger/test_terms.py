"""``validate``'s one-expression check (``_valid``) passes exactly the terms its problem lists
find nothing wrong with, so the fast path never lets through what the lists would refuse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger import DEFAULT_VOCABULARY, ConsentTerms
from consent_ledger.terms import (
    _NOTICE_HASH,
    _name_problems,
    _scope_problems,
    _time_problems,
    _valid,
)
from tests.consent_ledger.factories import T0, request

BASE = request().terms("cn_1", T0)
_names = st.sampled_from(["", " ", "\t\n", "C-1", "x" * 64, "x" * 65, "y" * 120, "y" * 121, "é"])
_scope = st.lists(
    st.sampled_from(
        ["consumption", "generation", "personalised_service", "marketing", "bogus", ""]
    ),
    max_size=3,
).map(tuple)
_times = st.integers(min_value=-2, max_value=400).map(lambda d: T0 + timedelta(days=d))


def _problems(terms: ConsentTerms, at: datetime, max_days: int) -> list[str]:
    problems = [
        *_name_problems(terms),
        *_scope_problems(terms, DEFAULT_VOCABULARY),
        *_time_problems(terms, at, max_days),
    ]
    if not _NOTICE_HASH.fullmatch(terms.notice_hash):
        problems.append("notice")
    return problems


@settings(max_examples=500, deadline=None)
@given(
    customer=_names,
    controller=_names,
    recipient=_names,
    collection_method=_names,
    purposes=_scope,
    categories=_scope,
    granularity=st.sampled_from(["hourly", "daily", "15min", "weekly", ""]),
    history_days=st.integers(min_value=-2, max_value=3662),
    expires_at=_times,
    given_at=_times,
    notice_hash=st.sampled_from([BASE.notice_hash, "sha256:" + "0" * 63, "md5:x", ""]),
    at=_times,
    max_days=st.sampled_from([1, 30, 365]),
)
def test_validate_agrees_with_problems(at: datetime, max_days: int, **fields: Any) -> None:
    terms = replace(BASE, **fields)
    assert _valid(terms, at, DEFAULT_VOCABULARY, max_days) == (not _problems(terms, at, max_days))


def test_odd_values_go_to_the_problem_lists() -> None:
    """A value of the wrong type is not judged by the fast check: the lists decide, as before."""
    odd = replace(BASE, customer=None)  # type: ignore[arg-type]
    assert not _valid(odd, T0, DEFAULT_VOCABULARY, 365)
    assert _problems(odd, T0, 365)
    aware = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    assert _valid(replace(BASE, given_at=aware), aware, DEFAULT_VOCABULARY, 365)
