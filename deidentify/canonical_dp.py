"""Canonical dp cells: the noisy sums of a unit, drawn once and served to everyone.

The cells are decided from the hierarchy only (a feeder with fewer than N registered households
is merged into its substation; a merged cell below N is withheld), never from the readings, so
which cells exist reveals nothing outside the noise's guarantee. The dominance rule is not
applied to dp cells: clipping bounds what any one household-day adds to a cell, which is what
the rule protects against, and deciding a cell's release on exact data would leak through the
pattern of withheld cells.

As with aggregated cells (``deidentify.canonical``), a unit is a parent group (a substation) and
one UTC day, computed from all of the unit's households and recorded by the caller, who charges
the calibration's ε to the unit's household-days before the noise is drawn and serves the
recorded values to every recipient after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from deidentify.aggregate import (
    GROUP,
    LEVEL,
    MEMBERS,
    MERGED,
    MERGED_INTO,
    REASON,
    RELEASED,
    STATUS,
    WITHHELD,
)
from deidentify.canonical_ad import NS, Tree, tree_of, unit_frame
from deidentify.cells_ad import DAY_S, Matrix, lay_out
from deidentify.dp import Bounds, Clipped, clip
from deidentify.errors import InvalidParameter
from deidentify.frames import ENERGY, FEEDER, INTERVAL, METER, START, SUBSTATION, require
from deidentify.noise_ad import LAPLACE, Calibration, SystemUniforms, UniformSource

__all__ = ["NoisyUnit", "dp_cells"]


@dataclass(frozen=True)
class NoisyUnit:
    """The dp cells of one parent and day at one granularity: noisy sums, no member counts."""

    parent: str
    day: int
    frame: pd.DataFrame
    fraction_clipped: float
    clipping_bias_wh: float


def dp_cells(
    readings: pd.DataFrame,
    households: pd.DataFrame,
    calibration: Calibration,
    bounds: Bounds,
    need: int,
    *,
    interval: int,
    group_by: str = FEEDER,
    parent: str = SUBSTATION,
    period: tuple[datetime, datetime] | None = None,
    source: UniformSource | None = None,
) -> tuple[NoisyUnit, ...]:
    """Noisy sums per unit at ``interval`` s, on cells decided from the hierarchy alone (the
    module text says why). ``calibration`` must already be charged to every unit's ledger."""
    require(households, (METER, group_by, parent), "households")
    matrix = lay_out(readings, households, group_by, interval, period, False, np.float32)
    if calibration.sensitivity < (bounds.l1 if calibration.mechanism == LAPLACE else bounds.l2)(
        matrix.grid.per_day
    ):
        raise InvalidParameter("the calibration is for smaller bounds than these")
    tree = tree_of(households, group_by, parent, matrix)
    clipped = clip(matrix, bounds)
    source = source if source is not None else SystemUniforms()
    return tuple(
        _noisy_unit(matrix, tree, clipped, p, day, calibration, need, source, (group_by, parent))
        for p in range(len(tree.labels))
        for day in range(matrix.grid.days)
    )


def _noisy_unit(
    matrix: Matrix, tree: Tree, clipped: Clipped, p: int, day: int, cal: Calibration,
    need: int, source: UniformSource, levels: tuple[str, str],
) -> NoisyUnit:  # fmt: skip
    grid = matrix.grid
    groups = tree.children[p]
    small = grid.sizes[groups] < need
    cols = slice(day * grid.per_day, (day + 1) * grid.per_day)
    sums = clipped.sums[groups, cols]
    big_sums = sums[~small]
    merged = sums[small].sum(axis=0, keepdims=True)
    merge = bool(small.any()) and int(grid.sizes[groups][small].sum()) >= need
    cells = np.vstack([big_sums, merged]) if merge else big_sums
    noisy = cells + cal.draw(cells.size, source).reshape(cells.shape)
    starts = grid.starts[cols]
    labels = [str(grid.groups[g]) for g in groups]
    parent = str(tree.labels[p])
    frames = [
        _noisy_rows(labels[g], levels[0], starts, grid.interval_s, noisy[k], RELEASED, "", None)
        for k, g in enumerate(np.flatnonzero(~small))
    ]
    alone = f"fewer than {need} registered households"
    for g in np.flatnonzero(small):
        status, into = (MERGED, parent) if merge else (WITHHELD, None)
        why = alone if merge else f"{alone}, and so are all such groups of {parent} together"
        frames.append(
            _noisy_rows(labels[g], levels[0], starts, grid.interval_s, None, status, why, into)
        )
    if merge:
        note = f"{int(small.sum())} group(s) below {need} households merged"
        frames.append(
            _noisy_rows(parent, levels[1], starts, grid.interval_s, noisy[-1], RELEASED, note, None)
        )
    day_index = int((grid.first_ns // (DAY_S * NS)) + day)
    return NoisyUnit(
        parent, day_index, pd.concat(frames, ignore_index=True), clipped.fraction, clipped.bias_wh
    )


def _noisy_rows(
    group: str, level: str, starts: pd.DatetimeIndex, interval_s: int,
    values: NDArray[np.float64] | None, status: str, reason: str, into: str | None,
) -> pd.DataFrame:  # fmt: skip
    n = len(starts)
    return unit_frame(
        {
            GROUP: [group] * n,
            LEVEL: [level] * n,
            START: starts,
            INTERVAL: [interval_s] * n,
            MEMBERS: [None] * n,
            ENERGY: [None] * n if values is None else values,
            STATUS: [status] * n,
            REASON: [reason] * n,
            MERGED_INTO: [into] * n,
        }
    )
