"""Exponential backoff with jitter and a ceiling, for retries while the MDMS is unreachable.

Attempt ``n`` waits between half and all of ``min(cap, base * 2**n)``: the wait grows, never
passes the cap, and concentrators that lost the MDMS at the same moment do not all come back in
the same instant.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s, self.cap_s = base_s, cap_s
        self._rng = rng or random.SystemRandom()

    def ceiling(self, attempt: int) -> float:
        """The longest wait of attempt ``attempt`` (0 is the first retry)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(max(attempt, 0), 64))

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)
