"""Denial-of-service limits at the MDMS (C1.8, T4): token buckets and a fair, bounded queue.

Each concentrator has its own token bucket of frames (rate and burst), so one that floods runs
out of tokens and is answered 429 with the time its tokens come back, while the others keep
theirs. Admitted batches wait in a bounded queue for the ingest workers; when it is full, or
when one concentrator already holds its fair share of it, the answer is 503 with Retry-After.
Nothing is buffered without bound: a refused batch stays with its concentrator, which spools
it and sends it again.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

SLACK_S = 1e-6
"""A take whose wait would be shorter than this is granted now: after waiting exactly what
``take`` said, float rounding of clock and rate can leave the bucket a hair short, and that must
not cost the caller another round trip."""


@dataclass(frozen=True)
class LimitSettings:
    max_body_bytes: int = 16 * 1024 * 1024
    rate_frames_per_s: float = 50_000.0
    """Sustained frames per second per concentrator (a day of 15-minute readings is one
    frame per meter: 50 k/s is 50 k meters' days a second)."""
    burst_frames: float = 100_000.0
    queue_batches: int = 16
    """Batches admitted and not yet answered, over all concentrators."""
    share: float = 0.5
    """The part of the queue one concentrator may hold."""
    workers: int = 1
    """Batches ingested at the same time (SQLite has one writer; PostgreSQL can take more)."""


class TokenBucket:
    """Tokens refill at ``rate`` per second up to ``burst``; ``take`` spends them or says how
    long until there are enough."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()
        self._lock = threading.Lock()

    def take(self, n: float) -> float:
        """Spend ``n`` tokens and return 0, or spend none and return the seconds to wait.

        More than ``burst`` tokens never fit: that is a ``ValueError``, not a wait (the caller
        refuses such a batch outright, since waiting would not help)."""
        if not 0 <= n <= self.burst:
            raise ValueError(f"{n} tokens never fit a bucket of {self.burst}")
        with self._lock:
            self._refill()
            if n <= self._tokens + self.rate * SLACK_S:
                self._tokens = max(0.0, self._tokens - n)
                return 0.0
            return (n - self._tokens) / self.rate

    def give_back(self, n: float) -> None:
        """Return ``n`` tokens taken for work that was refused afterwards (up to ``burst``)."""
        with self._lock:
            self._refill()
            self._tokens = min(self.burst, self._tokens + n)

    def full(self) -> bool:
        """Refilled to ``burst``: the same as a new bucket, so it may be forgotten."""
        with self._lock:
            self._refill()
            return self._tokens >= self.burst

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


class Limits:
    """Per-client buckets and the shared, fair queue (thread-safe).

    Buckets are kept per client name (a certificate, a portal visitor's address); past
    ``MAX_BUCKETS`` clients, buckets that have refilled (indistinguishable from new ones) are
    dropped, so many distinct clients cannot grow the table without bound."""

    MAX_BUCKETS = 10_000

    def __init__(
        self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._held: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.workers = threading.Semaphore(settings.workers)

    def bucket(self, client: str) -> TokenBucket:
        with self._lock:
            found = self._buckets.get(client)
            if found is None:
                if len(self._buckets) >= self.MAX_BUCKETS:
                    for name in [n for n, b in self._buckets.items() if b.full()]:
                        del self._buckets[name]
                s = self.settings
                found = self._buckets[client] = TokenBucket(
                    s.rate_frames_per_s, s.burst_frames, self._clock
                )
            return found

    def fits_burst(self, frames: int) -> bool:
        """Whether a batch of ``frames`` can ever pass a bucket (a larger one never does)."""
        return frames <= self.settings.burst_frames

    def retry_after_rate(self, client: str, frames: int) -> int:
        """0 if ``frames`` fit the client's bucket now (and are spent), else whole seconds to
        wait; ``ValueError`` when they never fit (see ``fits_burst``)."""
        wait = self.bucket(client).take(frames)
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def refund(self, client: str, frames: int) -> None:
        """Give back the tokens of a batch that passed the bucket but found no queue place: a
        503 is not charged against the concentrator's rate."""
        self.bucket(client).give_back(frames)

    def enter(self, client: str) -> bool:
        """Take a queue place for ``client``; False when the queue or its share is full."""
        with self._lock:
            total = sum(self._held.values())
            share = max(1, int(self.settings.queue_batches * self.settings.share))
            if total >= self.settings.queue_batches or self._held[client] >= share:
                return False
            self._held[client] += 1
            return True

    def leave(self, client: str) -> None:
        with self._lock:
            self._held[client] -= 1
            if self._held[client] <= 0:
                del self._held[client]

    def queued(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)
