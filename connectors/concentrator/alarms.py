"""The concentrator's alarms: conditions an operator must act on, logged once, not per frame.

An alarm is logged at ERROR when it is raised and at WARNING when it clears; while it stays
raised, its message may be refreshed silently. Not thread-safe: the concentrator calls it under
its lock.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from connectors.concentrator.config import MiB


class AlarmKind(StrEnum):
    SPOOL_FULL = "spool_full"
    SPOOL_UNWRITABLE = "spool_unwritable"
    REFUSED = "refused"
    DEAD_LETTER = "dead_letter"
    WORKER_DIED = "worker_died"


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


# ---- the wording of each alarm, in one place -------------------------------------------------

HOLD = "meters must hold their frames and submit them again later"


def spool_full_text(
    used: int, bound: int, spool_dir: Path, dead: int, since: datetime | None, error: str | None
) -> str:
    text = f"spool full: {human_size(used)} of {human_size(bound)} in {spool_dir}"
    if dead:
        text += f" ({human_size(dead)} of it dead letters)"
    if since is not None:
        text += f"; MDMS unreachable since {since:%Y-%m-%d %H:%M:%S} UTC ({error})"
    else:
        text += "; the MDMS is not keeping up"
    return f"{text}; {HOLD}"


def spool_unwritable_text(spool_dir: Path, error: OSError) -> str:
    return f"cannot write the spool in {spool_dir}: {error}; {HOLD}"


def refused_text(status: int, detail: str, pending: int, retry_s: float) -> str:
    why = "certificate refused or revoked" if status in (401, 403) else "unexpected answer"
    return (
        f"the MDMS refuses this concentrator ({status} {detail}: {why}); "
        f"{pending} batches kept in the spool, retrying every {retry_s:g} s"
    )


def dead_letter_text(count: int, dead_dir: Path, latest: str, why: str) -> str:
    return (
        f"{count} batches in the dead-letter folder {dead_dir} (latest {latest}: {why}); "
        "they are kept for an operator and not resent: report them"
    )


def leftover_dead_letters_text(count: int, dead_dir: Path) -> str:
    return (
        f"{count} batches in the dead-letter folder {dead_dir}, left by an earlier run: "
        "look at their .why notes"
    )


def worker_died_text(worker: str, deaths: int, error: str) -> str:
    return (
        f"thread {worker} died {deaths} time(s), last with {error}; it was restarted and "
        "forwarding goes on: report this (it is a bug)"
    )


def human_size(size: int) -> str:
    if size >= MiB:
        return f"{size / MiB:.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"
