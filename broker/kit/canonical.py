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


def _default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# CPython's C encoder, built once (``json.dumps`` builds a new one per call): no circular check,
# which ``_fast_ok`` makes moot (it recurses through the whole value first).
_c_encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _default, json.encoder.encode_basestring, None, ":", ",", True, False, False
)


def _encode(value: Any) -> str:
    return "".join(_c_encoder(value, 0))


class CanonicalJSONError(ValueError):
    """The value has no canonical JSON form (NaN, a non-string key, a lone surrogate...)."""


def _fast_ok(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and max(key) >= "\U00010000"):
                return False
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT:
                    continue
                return False
            if not (_items_ok(item) if kind is list else _fast_ok(item)):
                return False
        return True
    if kind is list or kind is tuple:
        return _items_ok(value)
    return False


def _items_ok(items: list[Any] | tuple[Any, ...]) -> bool:
    """``_fast_ok`` for each item, the common scalars checked inline (a loop, not a generator:
    audit details hold a list of names, and this runs once per entry)."""
    for item in items:
        kind = type(item)
        if kind is str:
            continue
        if kind is int and -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT:
            continue
        if not _fast_ok(item):
            return False
    return True


def _fast(value: Any) -> bytes | None:
    """The fast path's UTF-8 bytes, or None where the library must decide (a lone surrogate
    cannot be encoded; anything ``_fast_ok`` refuses)."""
    if not _fast_ok(value):
        return None
    try:
        return _encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return None


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 serialisation of ``value`` as UTF-8 bytes."""
    fast = _fast(value)
    return fast if fast is not None else _library(value)


def canonical_text(value: Any) -> str:
    """The RFC 8785 serialisation of ``value`` as text.

    Fast path caveat: a lone surrogate is not caught here but when the caller encodes the text
    as UTF-8 (``UnicodeEncodeError``); ``canonical_json`` checks it.
    """
    if _fast_ok(value):
        return _encode(value)
    return _library(value).decode("utf-8")


def _library(value: Any) -> bytes:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalJSONError(str(exc)) from exc
