"""The canonical-JSON fast path agrees byte for byte with the rfc8785 library (RFC 8785)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from broker.kit.canonical import CanonicalJSONError, canonical_json, canonical_text

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def _agree(value: Any) -> None:
    """Both give the same bytes, or both refuse the value."""
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(CanonicalJSONError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected
    assert canonical_text(value) == expected.decode("utf-8")


@given(_json)
def test_canonical_json_matches_rfc8785_library(value: Any) -> None:
    _agree(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\ue000": 2},  # astral vs private-use keys: UTF-16 order differs
        {"b": 1.5, "a": [1e21, -0.0]},
        {"n": 2**53 + 1},
        {"ctrl": '\x00\x1f\x7f\u2028"\\'},
    ],
)
def test_edge_cases_match_rfc8785_library(value: Any) -> None:
    _agree(value)


@pytest.mark.parametrize(
    "value", [{"x": math.nan}, {"x": math.inf}, {1: "non-string key"}, {"x": "\ud800"}]
)
def test_values_without_a_canonical_form_are_refused(value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)


def test_canonical_text_leaves_a_lone_surrogate_to_the_utf8_encoder() -> None:
    with pytest.raises(UnicodeEncodeError):
        canonical_text({"x": "\ud800"}).encode("utf-8")
    with pytest.raises(CanonicalJSONError):
        canonical_text({"x": math.nan})
