"""Merging new readings into a stored day, reading by reading (editing and deduplication).

At-least-once delivery means the same reading can arrive twice; it is stored once. A real
reading replaces an estimate of the same interval; a real reading that disagrees with a stored
real reading does not overwrite it: the stored one is kept and flagged ``CONFLICT`` (T3: a
profile rewritten on the meter after it was first sent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from connectors.mdms.block import Readings
from connectors.mdms.vee import Quality


@dataclass(frozen=True)
class Merged:
    readings: Readings
    added: int
    """Real readings stored for intervals that had none."""
    replaced_estimates: int
    duplicates: int
    conflicts: int
    estimates_added: int = 0
    """Estimates stored for intervals that had nothing."""


def merge(existing: Readings, incoming: Readings) -> Merged:
    """The union of ``existing`` and ``incoming`` (each sorted by end, ends unique within each)."""
    if len(existing) == 0:
        real = int(np.count_nonzero(incoming.quality & Quality.ESTIMATED == 0))
        return Merged(incoming, real, 0, 0, 0, len(incoming) - real)
    pos = np.searchsorted(existing.end_s, incoming.end_s)
    clipped = np.minimum(pos, len(existing) - 1)
    same = existing.end_s[clipped] == incoming.end_s
    old = clipped[same]
    old_est = existing.quality[old] & Quality.ESTIMATED != 0
    new_est = incoming.quality[same] & Quality.ESTIMATED != 0
    equal = (existing.register[old] == incoming.register[same]) & (
        existing.value[old] == incoming.value[same]
    )
    replace = old_est & ~new_est
    both_real = ~old_est & ~new_est
    conflict = both_real & ~equal
    quality = existing.quality.copy()
    quality[old[conflict]] |= np.uint8(Quality.CONFLICT)
    keep_existing = np.ones(len(existing), np.bool_)
    keep_existing[old[replace]] = False
    take_incoming = ~same
    take_incoming[np.flatnonzero(same)[replace]] = True
    kept = Readings(existing.end_s, existing.register, existing.value, existing.status, quality)
    combined = Readings.concat([kept.take(keep_existing), incoming.take(take_incoming)])
    order = np.argsort(combined.end_s, kind="stable")
    incoming_estimated = incoming.quality & Quality.ESTIMATED != 0
    added = int(np.count_nonzero(take_incoming & ~incoming_estimated))
    return Merged(
        combined.take(order),
        added - int(replace.sum()),
        int(replace.sum()),
        int((both_real & equal).sum()),
        int(conflict.sum()),
        int(np.count_nonzero(take_incoming & incoming_estimated)),
    )


def all_stored(stored: Readings, frame: Readings) -> bool:
    """True when every reading of ``frame`` is stored as a real reading with the same values:
    the frame is a resend (duplicate), not new data."""
    if len(stored) == 0:
        return False
    pos = np.minimum(np.searchsorted(stored.end_s, frame.end_s), len(stored) - 1)
    return bool(
        (stored.end_s[pos] == frame.end_s).all()
        and (stored.register[pos] == frame.register).all()
        and (stored.value[pos] == frame.value).all()
        and (stored.quality[pos] & Quality.ESTIMATED == 0).all()
    )


def unique(readings: Readings) -> Readings:
    """Sorted by end; of two readings of the same interval the first is kept, and flagged
    ``CONFLICT`` when the second disagrees with it."""
    order = np.argsort(readings.end_s, kind="stable")
    r = readings.take(order)
    if len(r) < 2:
        return r
    same = np.flatnonzero(r.end_s[1:] == r.end_s[:-1])
    if len(same) == 0:
        return r
    keep = np.ones(len(r), np.bool_)
    keep[same + 1] = False
    differ = same[(r.register[same] != r.register[same + 1]) | (r.value[same] != r.value[same + 1])]
    quality = r.quality.copy()
    quality[differ] |= np.uint8(Quality.CONFLICT)
    return Readings(r.end_s, r.register, r.value, r.status, quality).take(keep)
