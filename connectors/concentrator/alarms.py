"""The concentrator's alarms: conditions an operator must act on, logged once, not per frame.

An alarm is logged at ERROR when it is raised and at WARNING when it clears; while it stays
raised, its message may be refreshed silently. Not thread-safe: the concentrator calls it under
its lock.
"""

from __future__ import annotations

import logging
from enum import StrEnum


class AlarmKind(StrEnum):
    SPOOL_FULL = "spool_full"
    SPOOL_UNWRITABLE = "spool_unwritable"
    REFUSED = "refused"
    DEAD_LETTER = "dead_letter"


class Alarms:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._active: dict[AlarmKind, str] = {}

    def raise_alarm(self, kind: AlarmKind, message: str) -> None:
        if kind not in self._active:
            self._logger.error("ALARM %s: %s", kind.value, message)
        self._active[kind] = message

    def clear(self, kind: AlarmKind, why: str) -> None:
        if self._active.pop(kind, None) is not None:
            self._logger.warning("alarm %s cleared: %s", kind.value, why)

    def is_active(self, kind: AlarmKind) -> bool:
        return kind in self._active

    def message(self, kind: AlarmKind) -> str:
        return self._active.get(kind, kind.value)

    def messages(self) -> tuple[str, ...]:
        return tuple(self._active.values())
