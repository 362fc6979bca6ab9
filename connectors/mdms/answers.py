"""What ingest answers: each frame accepted, duplicate or rejected with its reason, and the
batch's totals (the body of ``POST /mdms/v1/frames``, the CLI's output, the audit summary)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"


@dataclass
class FrameAnswer:
    status: str
    reason: str | None = None
    detail: str | None = None
    readings: int = 0
    flags: list[str] = field(default_factory=list)

    def to_json(self, index: int) -> dict[str, Any]:
        return {
            "i": index,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "readings": self.readings,
            "flags": self.flags,
        }


@dataclass
class BatchResult:
    batch_id: str
    source: str
    answers: list[FrameAnswer]
    readings_stored: int = 0
    estimates: int = 0
    flagged: dict[str, int] = field(default_factory=dict)

    def outcomes(self) -> Counter[str]:
        """Frames per outcome: ``accepted``, ``duplicate`` or the rejection reason."""
        return Counter(
            a.reason if a.status == REJECTED and a.reason else a.status for a in self.answers
        )

    def count(self, status: str) -> int:
        return sum(1 for a in self.answers if a.status == status)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(a.reason for a in self.answers if a.reason is not None))

    def to_json(self, frames: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "batch_id": self.batch_id,
            "received": len(self.answers),
            "accepted": self.count(ACCEPTED),
            "duplicate": self.count(DUPLICATE),
            "rejected": self.count(REJECTED),
            "reasons": self.reasons(),
            "readings_stored": self.readings_stored,
            "estimates": self.estimates,
            "flagged": self.flagged,
        }
        if frames:
            body["frames"] = [a.to_json(i) for i, a in enumerate(self.answers)]
        return body
