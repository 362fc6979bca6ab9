"""The concentrator's settings in one checked, immutable value.

Limits are checked when the value is built, so a concentrator never starts with a spool bound
too small for one batch or a batch limit the wire format does not allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from connectors.dlms.batch import MAX_FRAMES

MiB = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class ConcentratorConfig:
    """Where to spool, how to batch, how far to spool, how to back off.

    ``name`` starts every batch id (``<name>.<run>.<seq>``); ``max_spool_bytes`` bounds the
    spool on disk, dead letters included; once full, frames are taken again only when the spool
    is down to ``resume_fraction`` of the bound (so the alarm does not flap). ``dedup_window``
    is how many recent frames are remembered to drop a byte-identical one a meter sent twice
    (0: none).
    """

    spool_dir: Path
    name: str = "concentrator"
    max_frames: int = 1000
    max_batch_bytes: int = 4 * MiB
    max_delay_s: float = 1.0
    max_spool_bytes: int = 256 * MiB
    resume_fraction: float = 0.9
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    request_timeout_s: float = 10.0
    dedup_window: int = 4096

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("concentrator configuration: " + "; ".join(problems))


def _problems(c: ConcentratorConfig) -> list[str]:
    checks = [
        (_NAME.fullmatch(c.name) is not None, "name is 1-32 of A-Z, a-z, 0-9, '_', '-'"),
        (1 <= c.max_frames <= MAX_FRAMES, f"max_frames must be 1 to {MAX_FRAMES}"),
        (c.max_batch_bytes >= 64, "max_batch_bytes must be at least 64"),
        (c.max_delay_s > 0, "max_delay_s must be positive"),
        (c.max_spool_bytes >= 2 * c.max_batch_bytes, "max_spool_bytes must hold two batches"),
        (0 < c.resume_fraction < 1, "resume_fraction must be between 0 and 1"),
        (0 < c.backoff_base_s <= c.backoff_cap_s, "need 0 < backoff_base_s <= backoff_cap_s"),
        (c.request_timeout_s > 0, "request_timeout_s must be positive"),
        (c.dedup_window >= 0, "dedup_window must not be negative"),
    ]
    return [message for ok, message in checks if not ok]
