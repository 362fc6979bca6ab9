"""Counter-based random numbers keyed by (seed, household, day, stream), computed for whole arrays.

Why not one ``numpy.random.Generator`` per household and day, spawned from a ``SeedSequence``:
building one costs about 10 µs, so a day of 1,000,000 meters would spend over 10 s creating
generators before drawing a single number, in a Python loop. Here every number is a pure
function of its key and position, ``splitmix64(key(seed, household, day, stream) + position)``,
so a household's numbers for a day never depend on which other households are drawn alongside
it or on how a time range is chunked, and a whole chunk of households is drawn with a handful of
vectorised integer operations. SplitMix64 (Steele, Lea, Flood 2014) passes BigCrush; it is a
simulation generator, not a cryptographic one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]
F64 = NDArray[np.float64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_UNIT = 2.0**-53
# Household number standing for "the whole region": weather is the same for every household.
REGION = 2**62


def mix(z: U64) -> U64:
    """The SplitMix64 finaliser, element-wise (uint64 arithmetic wraps)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _absorb(h: U64, value: NDArray[np.int64] | int) -> U64:
    v = np.atleast_1d(np.asarray(value, dtype=np.int64)).astype(np.uint64)  # arrays wrap silently
    return mix(h ^ mix(v * _GOLDEN + _GOLDEN))


class Streams:
    """Independent streams of uniform and normal numbers per (household, day, stream id)."""

    def __init__(self, seed: int) -> None:
        state = np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)
        self._seed_key: U64 = state.astype(np.uint64)

    def keys(self, households: NDArray[np.int64], day: int, stream: int) -> U64:
        """One 64-bit key per household: the start of its stream for ``day``."""
        h = np.broadcast_to(self._seed_key, households.shape).copy()
        h = _absorb(h, households)
        h = _absorb(h, day)
        return _absorb(h, stream)

    def uniform(self, households: NDArray[np.int64], day: int, stream: int, count: int) -> F64:
        """(households, count) uniforms in [0, 1): position k of each household's stream."""
        key = self.keys(households, day, stream)
        steps = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[np.newaxis, :]
        bits = mix(key[:, np.newaxis] + steps)
        return (bits >> np.uint64(11)).astype(np.float64) * _UNIT

    def normal(self, households: NDArray[np.int64], day: int, stream: int, count: int) -> F64:
        """(households, count) standard normals (Box-Muller over positions k and count + k)."""
        u = self.uniform(households, day, stream, 2 * count)
        radius = np.sqrt(-2.0 * np.log1p(-u[:, :count]))
        result: F64 = radius * np.cos(2.0 * np.pi * u[:, count:])
        return result
