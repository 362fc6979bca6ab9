"""Envelope encryption (C1.7): a sealed block opens only with its key and its own context."""

from __future__ import annotations

import pytest

from broker.kit.envelope import EnvelopeError, KeyRing, UnknownKeyError, key_ref_of, new_data_key

KEYS = {"dk_a": new_data_key(), "dk_b": new_data_key()}


def _loader(key_ref: str) -> bytes:
    try:
        return KEYS[key_ref]
    except KeyError:
        raise UnknownKeyError(key_ref) from None


def test_C1_7_sealed_block_round_trips_under_its_context() -> None:
    ring = KeyRing(_loader)
    sealed = ring.seal("dk_a", b"readings", b"meter=1|day=2026-11-24")
    assert key_ref_of(sealed) == "dk_a"
    assert b"readings" not in sealed
    assert ring.open(sealed, b"meter=1|day=2026-11-24") == b"readings"


def test_C1_7_block_moved_to_another_context_does_not_open() -> None:
    ring = KeyRing(_loader)
    sealed = ring.seal("dk_a", b"readings", b"meter=1|day=2026-11-24")
    with pytest.raises(EnvelopeError, match="does not authenticate"):
        ring.open(sealed, b"meter=2|day=2026-11-24")


@pytest.mark.parametrize("position", [0, 1, 3, 10, -1])
def test_C1_7_any_changed_byte_is_detected(position: int) -> None:
    ring = KeyRing(_loader)
    sealed = bytearray(ring.seal("dk_a", b"readings", b"ctx"))
    sealed[position] ^= 0x01
    with pytest.raises((EnvelopeError, UnknownKeyError)):
        ring.open(bytes(sealed), b"ctx")


def test_a_header_naming_another_key_does_not_open() -> None:
    ring = KeyRing(_loader)
    sealed = ring.seal("dk_a", b"readings", b"ctx")
    forged = sealed.replace(b"dk_a", b"dk_b", 1)
    with pytest.raises(EnvelopeError):
        ring.open(forged, b"ctx")


def test_truncated_block_is_refused() -> None:
    ring = KeyRing(_loader)
    with pytest.raises(EnvelopeError, match="truncated"):
        ring.open(ring.seal("dk_a", b"x", b"")[:20], b"")


def test_unknown_key_is_reported() -> None:
    with pytest.raises(UnknownKeyError):
        KeyRing(_loader).seal("dk_missing", b"x", b"")
