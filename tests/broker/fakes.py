"""Small hand-written fakes for the edges (no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlmodel import Session

from broker.audit.events import AuditEvent
from broker.settings import Mode, Settings


class RecordingAuditSink:
    """Records events instead of appending them to the Merkle log."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, session: Session, events: Sequence[AuditEvent]) -> list[int]:
        start = len(self.events)
        self.events.extend(events)
        return list(range(start, len(self.events)))

    def types(self) -> list[str]:
        return [event.type for event in self.events]


def settings_for(data_dir: Path, mode: Mode = Mode.production, **extra: object) -> Settings:
    return Settings(mode=mode, data_dir=data_dir, **extra)  # type: ignore[arg-type]
