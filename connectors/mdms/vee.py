"""Validation, estimation and editing (VEE) of a meter's new readings (T3, C1.5).

Every reading gets quality flags; nothing is dropped. The checks, against the reading before it
(the previous reading of the same push, or the last one stored for the meter):

- ``UNRECONCILED`` (T3): the interval energy differs from the cumulative register's delta over
  the same interval by more than the tolerance. A load profile altered on the meter shows up
  here, because the +A register and the profile would have to be changed consistently;
- ``NEGATIVE_DELTA``: the cumulative register went backwards;
- ``SPIKE``: more energy in an interval than the service can deliver (``max_power_w``);
- ``METER_STATUS``: the meter set status bits (power failure, clock adjusted, ...);
- gaps: missing intervals between two readings are estimated by spreading the register delta
  across them (``ESTIMATED``); a gap longer than ``max_gap_s`` is left open and the reading
  after it flagged ``GAP_BEFORE``. A real reading that arrives later replaces an estimate
  (editing, in ``connectors.mdms.merge``);
- ``CONFLICT`` (set when merging): a later frame gave other values for a stored reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np
from numpy.typing import NDArray

from connectors.mdms.block import Readings


class Quality(IntFlag):
    ESTIMATED = 0x01
    SPIKE = 0x02
    NEGATIVE_DELTA = 0x04
    UNRECONCILED = 0x08
    METER_STATUS = 0x10
    CONFLICT = 0x20
    GAP_BEFORE = 0x40


_NAMES = [[str(q.name).lower() for q in Quality if n & q.value] for n in range(256)]


def flag_names(flags: int) -> list[str]:
    """Lower-case names of the flags set in ``flags``, in bit order."""
    return list(_NAMES[flags & 0xFF])


@dataclass(frozen=True)
class VeeLimits:
    max_power_w: int = 30_000
    """Above this average import over an interval, a reading is a spike (30 kW: a large
    three-phase household with an EV charging)."""
    tolerance_wh: int = 1
    """Allowed difference between an interval's energy and its register delta (rounding)."""
    max_gap_s: int = 7 * 86_400
    """Longest gap that is filled with estimates."""


@dataclass(frozen=True)
class Previous:
    """The meter's last stored reading before the new ones (None when there is none)."""

    end_s: int | None
    register_wh: int | None


def step_flags(
    value: NDArray[np.int64],
    delta: NDArray[np.int64],
    status: NDArray[np.uint8],
    interval_s: int | NDArray[np.int64],
    consecutive: NDArray[np.bool_],
    has_prev: NDArray[np.bool_],
    limits: VeeLimits,
) -> NDArray[np.uint8]:
    """The flags of each reading against the one before it (``delta``: the register's change
    since then): reconciliation where the step is one interval, a register going backwards, a
    spike, the meter's status bits. ``validate`` and the fast lane share it."""
    quality = np.zeros(len(value), np.uint8)
    quality[consecutive & (np.abs(delta - value) > limits.tolerance_wh)] |= np.uint8(
        Quality.UNRECONCILED
    )
    quality[has_prev & (delta < 0)] |= np.uint8(Quality.NEGATIVE_DELTA)
    quality[value > limits.max_power_w * interval_s // 3600] |= np.uint8(Quality.SPIKE)
    quality[status != 0] |= np.uint8(Quality.METER_STATUS)
    return quality


def validate(
    new: Readings, previous: Previous, interval_s: int, limits: VeeLimits
) -> tuple[Readings, Readings]:
    """Flag ``new`` (sorted by end, no two with the same end) and estimate the gaps before and
    between them; returns (the flagged readings, the estimated ones)."""
    n = len(new)
    prev_end = np.empty(n, np.int64)
    prev_reg = np.empty(n, np.int64)
    has_prev = np.ones(n, np.bool_)
    prev_end[1:], prev_reg[1:] = new.end_s[:-1], new.register[:-1]
    if previous.end_s is None or previous.register_wh is None or previous.end_s >= new.end_s[0]:
        prev_end[0], prev_reg[0], has_prev[0] = 0, 0, False
    else:
        prev_end[0], prev_reg[0] = previous.end_s, previous.register_wh
    step = new.end_s - prev_end
    delta = new.register - prev_reg
    quality = new.quality | step_flags(
        new.value, delta, new.status, interval_s, has_prev & (step == interval_s), has_prev, limits
    )
    gaps = np.flatnonzero(has_prev & (step > interval_s))
    estimates = [
        _fill_gap(int(prev_end[i]), int(prev_reg[i]), new, int(i), quality, interval_s, limits)
        for i in gaps
    ]
    flagged = Readings(new.end_s, new.register, new.value, new.status, quality)
    filled = [e for e in estimates if e is not None]
    return flagged, (Readings.concat(filled) if filled else Readings.empty())


def _fill_gap(
    prev_end: int,
    prev_reg: int,
    new: Readings,
    i: int,
    quality: NDArray[np.uint8],
    interval_s: int,
    limits: VeeLimits,
) -> Readings | None:
    """Estimates for the missing intervals before reading ``i``; flags ``i`` if it cannot."""
    step = int(new.end_s[i]) - prev_end
    missing = step // interval_s - 1
    if step > limits.max_gap_s or step % interval_s or missing < 1:
        quality[i] |= np.uint8(Quality.GAP_BEFORE)
        return None
    total = int(new.register[i]) - prev_reg - int(new.value[i])
    if total < 0:
        quality[i] |= np.uint8(Quality.UNRECONCILED)
        total = 0
    values = np.full(missing, total // missing, np.int64)
    values[: total % missing] += 1
    return Readings(
        prev_end + interval_s * np.arange(1, missing + 1, dtype=np.int64),
        prev_reg + np.cumsum(values),
        values,
        np.zeros(missing, np.uint8),
        np.full(missing, Quality.ESTIMATED, np.uint8),
    )
