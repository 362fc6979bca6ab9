"""The open batch: frames collected until the batch is full (frames or bytes) or old enough,
and the memory of recent frames that drops a byte-identical frame a meter sent twice.

The concentrator never looks inside a frame (R1.1): a batch is a list of opaque byte strings and
a duplicate is recognised by a digest of the bytes alone.
"""

from __future__ import annotations

import hashlib
from collections import deque

from connectors.dlms.batch import MAX_FRAME_BYTES

# The batch framing of connectors.dlms.batch: "DLMB" | version | count, then length | frame.
BATCH_HEADER_BYTES = 4 + 1 + 4
FRAME_OVERHEAD_BYTES = 4


def frame_fits_a_batch(frame_len: int, max_batch_bytes: int) -> bool:
    limit = min(MAX_FRAME_BYTES, max_batch_bytes - BATCH_HEADER_BYTES - FRAME_OVERHEAD_BYTES)
    return 1 <= frame_len <= limit


class OpenBatch:
    """Not thread-safe: the concentrator calls it under its lock."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self._max_frames, self._max_bytes = max_frames, max_bytes
        self.frames: list[bytes] = []
        self.size = 0  # encoded size: 0 while empty
        self.opened_at: float | None = None

    def fits(self, frame_len: int) -> bool:
        grown = (self.size or BATCH_HEADER_BYTES) + FRAME_OVERHEAD_BYTES + frame_len
        return len(self.frames) < self._max_frames and grown <= self._max_bytes

    def add(self, frame: bytes, now: float) -> None:
        if not self.frames:
            self.opened_at, self.size = now, BATCH_HEADER_BYTES
        self.frames.append(frame)
        self.size += FRAME_OVERHEAD_BYTES + len(frame)

    @property
    def full(self) -> bool:
        """No further frame can join (a 1-byte frame would not fit)."""
        return not self.fits(1)

    def due_at(self, max_delay_s: float) -> float | None:
        """When the batch must be closed by age (monotonic seconds), None while it is empty."""
        return None if self.opened_at is None else self.opened_at + max_delay_s

    def clear(self) -> None:
        self.frames, self.size, self.opened_at = [], 0, None


class RecentFrames:
    """Digests of the last ``capacity`` frames taken; not thread-safe."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._order: deque[bytes] = deque()
        self._known: set[bytes] = set()

    @staticmethod
    def digest(frame: bytes) -> bytes:
        return hashlib.blake2b(frame, digest_size=16).digest()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._known

    def remember(self, digest: bytes) -> None:
        if self._capacity == 0 or digest in self._known:
            return
        if len(self._order) == self._capacity:
            self._known.discard(self._order.popleft())
        self._order.append(digest)
        self._known.add(digest)
