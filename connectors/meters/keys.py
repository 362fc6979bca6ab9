"""A meter's security suite 0 keys, and how the simulator derives them from the fleet's seed.

Real meters get their keys at manufacture and the utility imports them from the
manufacturer's key file; the simulator derives them from (seed, meter number) instead, so a
fleet, its key file and its frames can be rebuilt from the seed alone. The derivation is
BLAKE2b keyed by nothing secret: these are test keys, never keys for a real meter.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from connectors.dlms.frames import KEY_LENGTH

_PERSON = b"x1332-sim-keys"


@dataclass(frozen=True, slots=True)
class MeterKeys:
    """The global unicast encryption key, the authentication key and the master key (KEK)."""

    encryption_key: bytes
    authentication_key: bytes
    master_key: bytes

    def __post_init__(self) -> None:
        for name in ("encryption_key", "authentication_key", "master_key"):
            if len(getattr(self, name)) != KEY_LENGTH:
                raise ValueError(f"{name} must be {KEY_LENGTH} bytes")

    def __repr__(self) -> str:
        return "MeterKeys(<redacted>)"

    @classmethod
    def derive(cls, seed: int, index: int) -> MeterKeys:
        """The keys of meter ``index`` of the fleet seeded with ``seed`` (reproducible)."""
        message = seed.to_bytes(32, "big", signed=True) + index.to_bytes(8, "big")
        digest = hashlib.blake2b(message, digest_size=3 * KEY_LENGTH, person=_PERSON).digest()
        return cls(digest[:16], digest[16:32], digest[32:])

    @classmethod
    def random(cls) -> MeterKeys:
        """Fresh keys from the operating system's generator (an attacker's guess, a rotation)."""
        return cls(os.urandom(KEY_LENGTH), os.urandom(KEY_LENGTH), os.urandom(KEY_LENGTH))
