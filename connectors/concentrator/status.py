"""What the concentrator has done and what it holds: counters kept under its lock, and the
immutable snapshot ``Concentrator.status()`` hands out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ConcentratorStatus:
    """A snapshot. ``frames_submitted`` counts frames taken into a batch; refused (spool full)
    and dropped (byte-identical to a recent one) frames are counted apart. ``answers`` counts
    the MDMS's frame answers by status, ``rejections`` the rejected ones by reason;
    ``worker_restarts`` counts background threads that died and were started again."""

    frames_submitted: int
    frames_refused: int
    duplicates_dropped: int
    batches_closed: int
    batches_sent: int
    batches_delivered: int
    answers: Mapping[str, int]
    rejections: Mapping[str, int]
    retries: int
    worker_restarts: int
    spooled_batches: int
    spooled_bytes: int
    dead_letter_batches: int
    dead_letter_bytes: int
    alarms: tuple[str, ...]
    last_error: str | None
    mdms_failing_since: datetime | None

    @property
    def alarm(self) -> str | None:
        """The current alarm (all of them, if several), or None."""
        return " | ".join(self.alarms) or None


@dataclass
class Counters:
    frames_submitted: int = 0
    frames_refused: int = 0
    duplicates_dropped: int = 0
    batches_closed: int = 0
    batches_sent: int = 0
    batches_delivered: int = 0
    retries: int = 0
    worker_restarts: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
