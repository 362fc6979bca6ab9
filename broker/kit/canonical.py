"""Canonical JSON (RFC 8785, JCS) for audit entries, receipts and signed manifests.

Why a fast path of our own: the ``rfc8785`` library is pure Python and costs ~10-20 µs for a
small object, which alone would cap audit appends well below the 100 k entries/s target. For
the values we emit almost always (strings, booleans, null, integers within ±2**53, keys without
characters beyond the Basic Multilingual Plane) RFC 8785 output is byte-identical to
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` run by CPython's C
encoder: same escapes (``\\b \\f \\n \\r \\t``, other controls as lower-case ``\\u00xx``), same
integer form, and code-point key order equals UTF-16 key order inside the BMP. Anything else
(floats, big integers, astral characters in keys, lone surrogates) goes to the library.
``tests/broker/kit/test_canonical.py`` checks the two against each other with hypothesis.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_MAX_SAFE_INT = 2**53 - 1
_encode = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


class CanonicalJSONError(ValueError):
    """The value has no canonical JSON form (NaN, a non-string key, a lone surrogate...)."""


def _fast_ok(value: Any) -> bool:
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            if not key.isascii() and max(key) >= "\U00010000":
                return False
            if not _fast_ok(item):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(_fast_ok(item) for item in value)
    return False


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 serialisation of ``value`` as UTF-8 bytes."""
    if _fast_ok(value):
        try:
            return _encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let the library give its error
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalJSONError(str(exc)) from exc
