"""The one seam between the concentrator and the MDMS: a protocol and the outcomes of a send.

The batching and spooling logic talks to :class:`MdmsClient` only; ``https.HttpsMdmsClient`` is
the real adapter (mutual TLS), and tests use a hand-written fake. Each HTTP answer of the MDMS
maps to exactly one outcome, and each outcome to one course of action:

=============  =====================================  =========================================
outcome        answer                                 the concentrator
=============  =====================================  =========================================
Delivered      200 with a report on every frame       deletes the batch from the spool
Busy           503 / 429 (``Retry-After``)            keeps it, retries after that delay
BadBatch       400 / 413                              moves it to the dead-letter folder, alarm
Refused        401 / 403, other unexpected answers    keeps everything, alarm, retries slowly
Failed         no answer, timeout, other 5xx          keeps it, retries with backoff
=============  =====================================  =========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from connectors.dlms.batch import BatchTotals

FRAMES_PATH = "/mdms/v1/frames"
FrameStatus = Literal["accepted", "duplicate", "rejected"]


class FrameAnswer(BaseModel):
    """The MDMS's word on frame ``i`` of a batch; a rejection is final."""

    model_config = ConfigDict(frozen=True)

    i: int
    status: FrameStatus
    reason: str | None = None
    detail: str | None = None
    readings: int = 0


class BatchReport(BatchTotals):
    """The body of a 200 answer."""

    model_config = ConfigDict(frozen=True)

    frames: Sequence[FrameAnswer]

    def covers(self, batch_id: str, count: int) -> bool:
        """True when this report answers every one of the ``count`` frames of ``batch_id``."""
        indices = sorted(frame.i for frame in self.frames)
        return self.batch_id == batch_id and indices == list(range(count))


@dataclass(frozen=True)
class Delivered:
    report: BatchReport


@dataclass(frozen=True)
class Busy:
    status: int
    retry_after_s: float | None


@dataclass(frozen=True)
class BadBatch:
    status: int
    detail: str


@dataclass(frozen=True)
class Refused:
    status: int
    detail: str


@dataclass(frozen=True)
class Failed:
    detail: str


Outcome = Delivered | Busy | BadBatch | Refused | Failed


class MdmsClient(Protocol):
    def send(self, batch_id: str, body: bytes) -> Outcome:
        """POST one encoded batch; never raises for what the network or the MDMS does."""
        ...

    def close(self) -> None: ...
