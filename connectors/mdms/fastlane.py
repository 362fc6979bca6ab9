"""VEE and day blocks for the common case, for a whole batch in one set of numpy calls.

Most frames are the next push of a meter: one frame of the meter in the batch, every interval
in one day that has no stored block yet, each interval following the one before it (and the
meter's last stored reading) by exactly the meter's interval. For those, ``validate`` and
``encode_day`` per frame would spend most of their time on numpy's fixed cost per call; here
the checks and the block records are computed for all of them at once. Anything else (gaps,
overlaps, several frames of a meter, a day already stored) is left to the general path in
``connectors.mdms.ingest``; ``test_fastlane`` checks that both paths store the same blocks and
give the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from connectors.mdms.block import DAY_S, RECORD, Readings, day_header, pack_records
from connectors.mdms.vee import Quality, VeeLimits, step_flags


@dataclass(frozen=True)
class FastFrame:
    meter_id: str
    interval_s: int
    prev_end: int | None
    prev_register: int | None
    readings: Readings


@dataclass(frozen=True)
class Placed:
    day: int
    plaintext: bytes
    readings: int
    flags: int
    last_end: int
    last_register: int


def eligible(frame: FastFrame, horizon: int) -> bool:
    """The per-frame conditions that need no array work."""
    ends = frame.readings.end_s
    first, last = int(ends[0]), int(ends[-1])
    day = (first - 1) // DAY_S
    if day != (last - 1) // DAY_S or day <= horizon:
        return False
    if frame.prev_end is None:
        return True
    return frame.prev_register is not None and first - frame.prev_end == frame.interval_s


def place(frames: list[FastFrame], limits: VeeLimits) -> tuple[list[Placed | None], dict[str, int]]:
    """Each frame's block, or None where it needs the general path; and the count of new
    readings per quality flag."""
    counts = np.array([len(f.readings) for f in frames])
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ends = np.concatenate([f.readings.end_s for f in frames])
    register = np.concatenate([f.readings.register for f in frames])
    value = np.concatenate([f.readings.value for f in frames])
    status = np.concatenate([f.readings.status for f in frames])
    interval = np.repeat(np.array([f.interval_s for f in frames]), counts)
    has_prev = np.array([f.prev_end is not None for f in frames])
    prev_end = np.empty_like(ends)
    prev_reg = np.empty_like(register)
    prev_end[1:], prev_reg[1:] = ends[:-1], register[:-1]
    prev_end[starts] = [f.prev_end or 0 for f in frames]
    prev_reg[starts] = [f.prev_register or 0 for f in frames]
    known = np.ones(len(ends), np.bool_)
    known[starts] = has_prev
    steps_ok = ~known | (ends - prev_end == interval)
    frame_ok = np.logical_and.reduceat(steps_ok, starts)
    quality = step_flags(value, register - prev_reg, status, interval, known, known, limits)
    flags = np.bitwise_or.reduceat(quality, starts)
    days = (ends[starts] - 1) // DAY_S
    records = pack_records(
        ends - np.repeat(days * DAY_S, counts), Readings(ends, register, value, status, quality)
    )
    out: list[Placed | None] = []
    for i, frame in enumerate(frames):
        if not frame_ok[i]:
            out.append(None)
            continue
        lo, n = int(starts[i]), int(counts[i])
        head = day_header(frame.interval_s, n)
        body = records[lo * RECORD.itemsize : (lo + n) * RECORD.itemsize]
        last = lo + n - 1
        placed = Placed(
            int(days[i]), head + body, n, int(flags[i]), int(ends[last]), int(register[last])
        )
        out.append(placed)
    kept = np.repeat(frame_ok, counts)
    kept_quality = quality[kept]
    per_flag = {str(q.name).lower(): int(np.count_nonzero(kept_quality & q.value)) for q in Quality}
    return out, {k: v for k, v in per_flag.items() if v}
