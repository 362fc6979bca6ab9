"""Granularities are ordered by their length in seconds; unknown ones are refused, not guessed."""

from __future__ import annotations

import pytest

from consent_ledger import GRANULARITY_S, InvalidConsent, coarser_or_equal


def test_granularities_run_fine_to_coarse() -> None:
    assert list(GRANULARITY_S.items()) == [
        ("15min", 900),
        ("30min", 1800),
        ("hourly", 3600),
        ("daily", 86_400),
        ("monthly", 2_592_000),
    ]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("daily", "hourly", True),
        ("hourly", "hourly", True),
        ("monthly", "15min", True),
        ("15min", "30min", False),
        ("hourly", "daily", False),
    ],
)
def test_coarser_or_equal(a: str, b: str, expected: bool) -> None:
    assert coarser_or_equal(a, b) is expected


def test_an_unknown_granularity_is_refused() -> None:
    with pytest.raises(InvalidConsent, match="unknown granularity 'weekly'"):
        coarser_or_equal("weekly", "daily")
