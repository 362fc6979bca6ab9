"""Withheld cells recovered from every granularity, before and now.

An attacker pools the released cells of every granularity of a day (15 min to daily) and solves
by linear algebra for every withheld cell that some combination of them gives exactly
(``recoverable``) and its value (``derive``). Per-request frames are read as blocks, feeder x
base interval (``old_blocks``); canonical units are attacked by
``deidentify.canonical.audit_recovery``, the same attacker solved one cell at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from broker.assurance.substation import BASE_S, DAY_S, per_request
from deidentify.aggregate import GROUP, LEVEL, MERGED, MERGED_INTO, RELEASED, STATUS
from deidentify.canonical import AGGREGATE_GRANULARITIES, Unit, audit_recovery
from deidentify.cells_ad import F64
from deidentify.frames import ENERGY, FEEDER, INTERVAL, METER, START, SUBSTATION

Block = tuple[tuple[str, ...], int, int]
"""A cell as the blocks it sums: (groups, first base slot, end slot) of its day."""


def cross_granularity_recovery(
    day: pd.DataFrame, households: pd.DataFrame, unit: Unit
) -> dict[str, Any]:
    """Every released cell of every granularity pooled: which withheld cells do they give back
    exactly (by linear algebra), and what share of the feeder cells is released."""
    day0 = pd.Timestamp(unit.day * DAY_S, unit="s", tz="UTC")
    released: list[Block] = []
    values: list[float] = []
    withheld: list[Block] = []
    shares: dict[str, dict[str, float]] = {}
    for grain in AGGREGATE_GRANULARITIES:
        old = per_request(day, households, grain).frame
        got, wh, held = old_blocks(old, day0, BASE_S)
        released += got
        values += wh
        withheld += held
        shares[str(grain)] = {"before": _share(old, grain), "now": _share(unit.frame, grain)}
    before = recoverable(released, withheld)
    derived = derive(released, values, before)
    blocks = _block_energy(day, households, day0)
    truth = [sum(blocks.get((g, s), 0.0) for g in c[0] for s in range(c[1], c[2])) for c in before]
    error = max((abs(d - t) for d, t in zip(derived, truth, strict=True)), default=None)
    now = audit_recovery(unit)
    return {
        "granularities_s": list(AGGREGATE_GRANULARITIES),
        "before": {
            "released_cells": len(released),
            "withheld_cells": len(withheld),
            "recovered": len(before),
            # the solver's rounding aside (the combinations are exact sums of integers)
            "max_abs_error_wh": None if error is None else round(error, 6),
            "recovered_cells": [
                {**_named(c, day0), "derived_wh": round(d, 6), "true_wh": t}
                for c, d, t in zip(before, derived, truth, strict=True)
            ],
        },
        "now": {
            "released_cells": len(unit.released_blocks),
            "withheld_cells": len(unit.withheld_blocks),
            "recovered": len(now),
            "recovered_cells": [_named(c, day0) for c in now],
        },
        "released_share": shares,
        "note": "recovered: withheld cells that a linear combination of the cells released at "
        "every granularity gives exactly; released_share: feeder cells released alone or "
        "inside a released merged cell, per granularity (what complementary suppression costs)",
    }


def old_blocks(
    frame: pd.DataFrame, day0: pd.Timestamp, base_s: int
) -> tuple[list[Block], list[float], list[Block]]:
    """The released cells (and their sums) and the withheld cells of a per-request
    ``aggregate`` frame of one day, as blocks: a released merged (parent) row holds the feeders
    marked merged into it at its start and interval; a withheld cell is a feeder row not
    released on its own."""
    rows = frame.to_dict("records")
    slot = ((frame[START] - day0).dt.total_seconds() // base_s).astype(int).to_numpy()
    span = (frame[INTERVAL].to_numpy() // base_s).astype(int)
    into: dict[tuple[str, int, int], list[str]] = {}
    for row, a, n in zip(rows, slot, span, strict=True):
        if row[STATUS] == MERGED:
            into.setdefault((str(row[MERGED_INTO]), int(a), int(n)), []).append(str(row[GROUP]))
    released: list[Block] = []
    values: list[float] = []
    withheld: list[Block] = []
    for row, a, n in zip(rows, slot, span, strict=True):
        group, first, end = str(row[GROUP]), int(a), int(a + n)
        if row[STATUS] == RELEASED:
            merged = row[LEVEL] == SUBSTATION
            groups = tuple(sorted(into.get((group, first, int(n)), []))) if merged else (group,)
            released.append((groups, first, end))
            values.append(float(row[ENERGY]))
        else:
            withheld.append(((group,), first, end))
    return released, values, withheld


def _columns(index: dict[tuple[str, int], int], cells: list[Block]) -> F64:
    out = np.zeros((len(index), len(cells)))
    for j, (groups, a, b) in enumerate(cells):
        out[[index[(g, s)] for g in groups for s in range(a, b)], j] = 1.0
    return out


def _index(*cells: list[Block]) -> dict[tuple[str, int], int]:
    index: dict[tuple[str, int], int] = {}
    for groups, a, b in (c for part in cells for c in part):
        for g in groups:
            for s in range(a, b):
                index.setdefault((g, s), len(index))
    return index


def recoverable(released: list[Block], withheld: list[Block]) -> list[Block]:
    """The ``withheld`` cells a linear combination of the ``released`` ones gives exactly: the
    attacker of ``deidentify.canonical.audit_recovery``, solved for every cell at once."""
    if not released or not withheld:
        return []
    index = _index(released, withheld)
    basis, targets = _columns(index, released), _columns(index, withheld)
    coef, *_ = np.linalg.lstsq(basis, targets, rcond=None)
    residual = np.abs(basis @ coef - targets).max(axis=0)
    return [cell for cell, r in zip(withheld, residual, strict=True) if r < 1e-6 + 1e-9]


def derive(released: list[Block], values: list[float], cells: list[Block]) -> list[float]:
    """What the attacker computes for ``cells`` (which ``recoverable`` found) from the released
    cells' sums ``values``."""
    if not cells:
        return []
    index = _index(released, cells)
    coef, *_ = np.linalg.lstsq(_columns(index, released), _columns(index, cells), rcond=None)
    return [float(v) for v in np.asarray(values) @ coef]


def _block_energy(
    day: pd.DataFrame, households: pd.DataFrame, day0: pd.Timestamp
) -> dict[tuple[str, int], float]:
    """The true sum of every (feeder, base slot) block of the day."""
    slot = ((day[START] - day0).dt.total_seconds() // BASE_S).astype(int)
    joined = day.assign(slot=slot).merge(households[[METER, FEEDER]], on=METER)
    sums = joined.groupby([FEEDER, "slot"], observed=True)[ENERGY].sum()
    feeders, slots = sums.index.get_level_values(0), sums.index.get_level_values(1)
    return {
        (str(f), int(s)): float(v) for f, s, v in zip(feeders, slots, sums.to_numpy(), strict=True)
    }


def _share(frame: pd.DataFrame, grain: int) -> float:
    cells = frame[(frame[INTERVAL] == grain) & (frame[LEVEL] == FEEDER)]
    out = cells[STATUS].isin([RELEASED, MERGED]).mean() if len(cells) else 0.0
    return round(float(out), 4)


def _named(cell: Block, day0: pd.Timestamp) -> dict[str, Any]:
    groups, a, b = cell
    start = day0 + pd.Timedelta(seconds=a * BASE_S)
    return {"groups": list(groups), "start": start.isoformat(), "interval_s": (b - a) * BASE_S}
