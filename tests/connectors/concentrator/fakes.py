"""Hand-written fakes for the concentrator's edges: an in-process MDMS that records every call,
meters that hold a refused frame and submit it again, and real ciphered frames to carry."""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.concentrator import (
    BatchReport,
    Concentrator,
    Delivered,
    Failed,
    FrameAnswer,
    Outcome,
    SpoolFull,
)
from connectors.concentrator.backoff import Backoff
from connectors.concentrator.config import ConcentratorConfig, MiB
from connectors.dlms.batch import decode_batch
from connectors.dlms.frames import seal

_KEY = bytes(16)  # the meters' key: only the tests hold it, never the concentrator


def ciphered_frame(meter: int, counter: int, payload: bytes = b"\x0f" + bytes(60)) -> bytes:
    """A real general-glo-ciphering APDU of meter ``meter`` with invocation counter ``counter``."""
    return seal(meter.to_bytes(8, "big"), counter, _KEY, _KEY, payload)


def fast_config(spool_dir: Path, **changes: Any) -> ConcentratorConfig:
    """Settings for tests: short delays, small limits; ``changes`` override any of them."""
    base = ConcentratorConfig(
        spool_dir=spool_dir,
        name="dc-test",
        max_frames=50,
        max_batch_bytes=64 * 1024,
        max_delay_s=0.05,
        max_spool_bytes=MiB,
        backoff_base_s=0.01,
        backoff_cap_s=0.08,
        request_timeout_s=2.0,
    )
    return dataclasses.replace(base, **changes)


def frames_of(meter: int, count: int, start: int = 1) -> list[bytes]:
    return [ciphered_frame(meter, start + n) for n in range(count)]


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes (a bound on a hang, not on
    speed: a loaded machine is slow)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@dataclass(frozen=True)
class Call:
    batch_id: str
    body: bytes
    at: float


class FakeMdms:
    """Answers as the MDMS does: every frame accepted, or duplicate when its bytes were stored
    before. Scripted outcomes are answered first, one per call; while ``down`` it fails every
    call as an unreachable MDMS would. ``reject`` names frames to reject with a reason."""

    def __init__(self, script: Iterable[Outcome] = ()) -> None:
        self.calls: list[Call] = []
        self.script: deque[Outcome] = deque(script)
        self.stored: list[bytes] = []
        self.reject: dict[bytes, str] = {}
        self.down = False
        self.closed = False
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()

    def send(self, batch_id: str, body: bytes) -> Outcome:
        with self._lock:
            self.calls.append(Call(batch_id, body, time.monotonic()))
            if self.script:
                return self.script.popleft()
            if self.down:
                return Failed("ConnectError: [Errno 111] Connection refused")
            return Delivered(self._store(batch_id, decode_batch(body)))

    def close(self) -> None:
        self.closed = True

    def batch_ids(self) -> list[str]:
        with self._lock:
            return [call.batch_id for call in self.calls]

    def sent_frames(self) -> list[bytes]:
        with self._lock:
            return [frame for call in self.calls for frame in decode_batch(call.body)]

    def _store(self, batch_id: str, frames: Sequence[bytes]) -> BatchReport:
        answers = [self._answer(i, frame) for i, frame in enumerate(frames)]
        counts = Counter(a.status for a in answers)
        reasons = Counter(a.reason for a in answers if a.reason)
        return BatchReport(
            batch_id=batch_id,
            received=len(frames),
            accepted=counts["accepted"],
            duplicate=counts["duplicate"],
            rejected=counts["rejected"],
            reasons=dict(reasons),
            frames=answers,
        )

    def _answer(self, i: int, frame: bytes) -> FrameAnswer:
        if frame in self.reject:
            return FrameAnswer(i=i, status="rejected", reason=self.reject[frame], detail="test")
        if frame in self._seen:
            return FrameAnswer(i=i, status="duplicate")
        self._seen.add(frame)
        self.stored.append(frame)
        return FrameAnswer(i=i, status="accepted", readings=96)


class RecordingBackoff(Backoff):
    """A backoff that remembers every delay it chose, with the attempt it was for."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        super().__init__(base_s, cap_s)
        self.chosen: list[tuple[int, float]] = []

    def delay(self, attempt: int) -> float:
        chosen = super().delay(attempt)
        self.chosen.append((attempt, chosen))
        return chosen


class Meter(threading.Thread):
    """A meter pushing its frames; a frame refused with SpoolFull is held and submitted again."""

    def __init__(self, concentrator: Concentrator, frames: Sequence[bytes], timeout_s: float):
        super().__init__(daemon=True)
        self.frames, self.refusals = list(frames), 0
        self._concentrator, self._deadline = concentrator, time.monotonic() + timeout_s
        self.delivered_all = False

    def run(self) -> None:
        for frame in self.frames:
            while not self._submit(frame):
                if time.monotonic() > self._deadline:
                    return
                time.sleep(0.005)
        self.delivered_all = True

    def _submit(self, frame: bytes) -> bool:
        try:
            self._concentrator.submit(frame)
        except SpoolFull:
            self.refusals += 1
            return False
        return True


def random_frame(size: int) -> bytes:
    return b"\xdb" + secrets.token_bytes(size - 1)
