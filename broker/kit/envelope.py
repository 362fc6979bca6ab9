"""Envelope encryption (C1.6, C1.7): AES-256-GCM data keys wrapped by a key-encryption key.

A record is sealed under a data key with the record's context (for example subject, meter and
day) as associated data, so a block moved to another context fails to open. Data keys are
stored only wrapped by the key-encryption key (KEK), which a ``KeyProvider`` holds: a file
here, a KMS or HSM in production. Rotating the KEK re-wraps data keys; no record is
re-encrypted.

Sealed format, version 1::

    0x01 | len(key_ref) (1 byte) | key_ref (ASCII) | nonce (12 bytes) | ciphertext + tag (16)

The header (version and key reference) is part of the associated data too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = 0x01
NONCE_LEN = 12
KEY_LEN = 32


class EnvelopeError(Exception):
    """A sealed block could not be opened: wrong key, wrong context, or damaged bytes."""


class UnknownKeyError(EnvelopeError):
    """The key a block names does not exist, or was destroyed (crypto-shredding)."""


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under the KEK ``kek_id``."""

    kek_id: str
    blob: bytes


class KeyProvider(Protocol):
    """Holds the key-encryption key; a file here, a KMS or HSM elsewhere."""

    def current_kek_id(self) -> str: ...

    def wrap(self, key: bytes, context: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes: ...


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_LEN * 8)


def _header(key_ref: str) -> bytes:
    ref = key_ref.encode("ascii")
    if not 0 < len(ref) < 256:
        raise ValueError("a key reference is 1 to 255 ASCII characters")
    return bytes((FORMAT_V1, len(ref))) + ref


def key_ref_of(sealed: bytes) -> str:
    """The data-key reference a sealed block names, read from its header."""
    if len(sealed) < 2 or sealed[0] != FORMAT_V1:
        raise EnvelopeError("not a sealed block of format 1")
    end = 2 + sealed[1]
    if len(sealed) < end + NONCE_LEN + 16:
        raise EnvelopeError("sealed block is truncated")
    try:
        return sealed[2:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("sealed block has a damaged key reference") from exc


class KeyRing:
    """Seals and opens blocks; unwrapped data keys are cached as AESGCM objects.

    ``loader(key_ref)`` returns the plaintext data key (unwrapping it through the KEK) or raises
    ``UnknownKeyError``.
    """

    def __init__(self, loader: Callable[[str], bytes]) -> None:
        self._loader = loader
        self._cache: dict[str, tuple[AESGCM, bytes]] = {}

    def _entry(self, key_ref: str) -> tuple[AESGCM, bytes]:
        entry = self._cache.get(key_ref)
        if entry is None:
            entry = (AESGCM(self._loader(key_ref)), _header(key_ref))
            self._cache[key_ref] = entry
        return entry

    def forget(self, key_ref: str | None = None) -> None:
        """Drop cached keys (all, or one), e.g. after a data key was destroyed."""
        if key_ref is None:
            self._cache.clear()
        else:
            self._cache.pop(key_ref, None)

    def seal(self, key_ref: str, plaintext: bytes, context: bytes) -> bytes:
        cipher, header = self._entry(key_ref)
        nonce = os.urandom(NONCE_LEN)
        return header + nonce + cipher.encrypt(nonce, plaintext, header + context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        key_ref = key_ref_of(sealed)
        start = 2 + sealed[1]
        header, nonce = sealed[:start], sealed[start : start + NONCE_LEN]
        try:
            cipher = self._entry(key_ref)[0]
            return cipher.decrypt(nonce, sealed[start + NONCE_LEN :], header + context)
        except InvalidTag as exc:
            raise EnvelopeError(
                f"block under key {key_ref} does not authenticate: damaged, or opened "
                "with the wrong context"
            ) from exc
