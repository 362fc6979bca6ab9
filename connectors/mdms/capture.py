"""Ingesting a capture file: one hex APDU per line, ``#`` comments and blank lines allowed.

``broker mdms ingest FILE`` runs the same pipeline as ``POST /mdms/v1/frames``, in batches of
``batch_size`` frames, one transaction each. A line that is not hex is answered as a
``malformed`` frame (with its line number) like any other bad frame, and the others go on.
Ingesting the same file again answers its frames ``duplicate`` and stores nothing twice (their
readings are stored already); the batch ids, named after the file's digest, tie both runs'
audit summaries to the same file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import BrokerError
from broker.storage.db import Database
from connectors.dlms.frames import Reason
from connectors.mdms.answers import REJECTED, FrameAnswer
from connectors.mdms.ingest import IngestPipeline


class CaptureError(BrokerError):
    """The capture file cannot be read."""


@dataclass(frozen=True)
class CaptureLine:
    line: int
    frame: bytes
    error: str | None = None
    """Set when the line is not hex: ``frame`` is then the line's own bytes, which the
    pipeline rejects as ``malformed`` (so it is counted and audited like any bad frame)."""


def read_capture(path: Path) -> Iterator[CaptureLine]:
    """The frames of a capture, with their line numbers; bad hex is reported, not raised."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for number, text in enumerate(handle, start=1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            compact = "".join(text.split())
            try:
                yield CaptureLine(number, bytes.fromhex(compact))
            except ValueError:
                raw = compact.encode("utf-8", "replace")[:200]
                yield CaptureLine(number, raw, f"line {number} is not hex")


@dataclass
class CaptureReport:
    path: str
    frames: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    readings_stored: int = 0
    estimates: int = 0
    flagged: dict[str, int] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: int, answer: FrameAnswer) -> None:
        self.frames += 1
        key = answer.reason if answer.status == REJECTED and answer.reason else answer.status
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        self.answers.append({"line": line, **answer.to_json(len(self.answers))})


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_capture(
    db: Database,
    pipeline: IngestPipeline,
    path: Path,
    actor: str,
    batch_size: int = 1000,
    tick: Callable[[int], None] = lambda _n: None,
) -> CaptureReport:
    """Ingest every frame of ``path``; returns the answer of each, by line."""
    report = CaptureReport(str(path))
    stem = f"cli-{file_digest(path)[:24]}"
    pending: list[CaptureLine] = []
    number = 0
    for item in read_capture(path):
        pending.append(item)
        if len(pending) >= batch_size:
            _batch(db, pipeline, pending, f"{stem}-{number}", actor, report)
            tick(len(pending))
            number, pending = number + 1, []
    if pending:
        _batch(db, pipeline, pending, f"{stem}-{number}", actor, report)
        tick(len(pending))
    return report


def _batch(
    db: Database,
    pipeline: IngestPipeline,
    lines: list[CaptureLine],
    batch_id: str,
    actor: str,
    report: CaptureReport,
) -> None:
    with db.transaction() as session:
        result = pipeline.ingest(session, [item.frame for item in lines], "cli", batch_id, actor)
    report.readings_stored += result.readings_stored
    report.estimates += result.estimates
    for name, n in result.flagged.items():
        report.flagged[name] = report.flagged.get(name, 0) + n
    for item, answer in zip(lines, result.answers, strict=True):
        if item.error is not None:  # the line's text was refused as a frame; say why
            answer = FrameAnswer(REJECTED, Reason.MALFORMED.value, item.error)
        report.add(item.line, answer)
