"""Identifiers and keyed hashes of personal identifiers.

Audit entries and other long-lived records name a data subject only by a keyed hash
(HMAC-SHA-256 under a secret subject-hash key), so an entry never holds raw personal data and
erasing a customer never breaks a Merkle proof.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SUBJECT_HASH_PREFIX = "hs1:"


def new_id(prefix: str) -> str:
    """A random identifier such as ``dk_3f9a...`` (128 bits of entropy)."""
    return f"{prefix}_{secrets.token_hex(16)}"


class SubjectHasher:
    """Turns a subject identifier (customer ref, meter id) into a stable keyed hash."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the subject-hash key must be at least 256 bits")
        self._key = key
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, subject: str) -> str:
        # A copy of the keyed HMAC, not a new one: the key schedule is done once (``hmac.new``
        # per subject cost 2-4 µs here, a copy ~1 µs; the digest is the same)
        keyed = self._keyed.copy()
        keyed.update(subject.encode("utf-8"))
        return SUBJECT_HASH_PREFIX + keyed.hexdigest()
