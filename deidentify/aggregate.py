"""Aggregation by the regulators' rules: the ``aggregated`` tier (X.1332 C4.3, R4.4, C3.3).

A group sum protects its members only if no member can be read back from it. The rules, as
the California PUC set them for energy data (D.14-05-016) and as this module applies them:

* **N rule**: a cell (a group in one released interval) is released only if at least
  ``min_members`` meters report in that interval, 15 by default (the "15" of 15/15); for
  residential interval data the floor is ``min_members_residential``, 100 by default
  (D.14-05-016), so with ``residential=True`` a cell needs ``max(min_members,
  min_members_residential)`` members.
* **Dominance rule**: no member may hold more than ``max_share`` of the cell's total, 15 % by
  default (the second "15"). A cell whose total is 0 has no member above any share.

Both rules are checked for **every released interval**, not on the period's totals: a group of
households whose daily totals are balanced can still have one household boiling a kettle or
charging a car in a quiet quarter-hour, holding most of that quarter-hour's total. A member's
energy in a released interval is the sum of its readings in that interval.

A failing cell is **merged into its parent group** (feeder -> substation): for each parent and
interval, the cells of its children that failed are summed into one parent cell, which is
re-checked by the same rules and released if it passes. The merged cell holds the failing
children only, never the siblings released on their own, so the release never holds both a
parent total and its passing children (their difference would give back the failing cell). A
cell that still fails is **suppressed**: its value is withheld and marked "threshold not met".

Output frame, one row per group and released interval (``AGGREGATE_COLUMNS``), then one row
per merged parent cell:

    group: str              the group's label (a feeder, or a substation for merged cells)
    level: str              the households column the label comes from (group_by or parent)
    start: datetime64[UTC]  the released interval's start
    interval_s: int         the released interval's length in seconds
    members: Int64          meters reporting in the interval (N)
    energy_wh: Float64      the sum of the members' energy; <NA> when withheld
    status: str             "released", "merged" (withheld here, released in ``merged_into``)
                            or "threshold not met" (suppressed)
    reason: str             why a cell failed ("" when it passed)
    merged_into: str        the parent cell holding a merged cell's members; <NA> otherwise

Two overlapping releases that both pass these rules can still give back a household exactly:
their difference. ``deidentify.differencing_ad.check_differencing`` (re-exported here) refuses
such a release from the release history; ``Aggregated.members`` is what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from deidentify.cells_ad import F64, Grid, Matrix, by_group, lay_out
from deidentify.differencing_ad import MemberSet, PastRelease, check_differencing
from deidentify.errors import InvalidData, InvalidParameter
from deidentify.frames import ENERGY, FEEDER, INTERVAL, START, SUBSTATION, require
from deidentify.manifest import ReleaseManifest

__all__ = [
    "AGGREGATE_COLUMNS",
    "Aggregated",
    "MemberSet",
    "PastRelease",
    "Rules",
    "aggregate",
    "check_differencing",
]

GROUP = "group"
LEVEL = "level"
MEMBERS = "members"
STATUS = "status"
REASON = "reason"
MERGED_INTO = "merged_into"
AGGREGATE_COLUMNS = (GROUP, LEVEL, START, INTERVAL, MEMBERS, ENERGY, STATUS, REASON, MERGED_INTO)
RELEASED = "released"
MERGED = "merged"
WITHHELD = "threshold not met"
Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class Rules:
    """The thresholds a cell must pass: at least ``need`` members, none above ``max_share``."""

    need: int
    max_share: float

    @classmethod
    def of(
        cls, min_members: int, max_share: float, residential_floor: int, residential: bool
    ) -> Rules:
        if min(min_members, residential_floor) < 2:
            raise InvalidParameter("a group needs at least 2 members (min_members >= 2)")
        if not 0 < max_share <= 1:
            raise InvalidParameter(f"max_share must be in (0, 1], got {max_share}")
        return cls(max(min_members, residential_floor) if residential else min_members, max_share)

    def failures(self, n: F64, total: F64, top: F64) -> tuple[Mask, Mask]:
        """(too few members, dominated) per cell."""
        return n < self.need, top > self.max_share * total

    def reasons(self, few: Mask, dominated: Mask) -> NDArray[np.str_]:
        """Why each cell failed, "" where it passed."""
        low, top = f"fewer than {self.need} members", f"a member above {self.max_share:.0%}"
        both = f"{low}; {top}"
        return np.where(few & dominated, both, np.where(few, low, np.where(dominated, top, "")))


@dataclass(frozen=True)
class Cells:
    """Per cell (group or parent x slot): members reporting, their total, the largest member."""

    n: F64
    total: F64
    top: F64


@dataclass(frozen=True)
class Aggregated:
    frame: pd.DataFrame
    manifest: ReleaseManifest
    members: tuple[MemberSet, ...]
    """Who is in every released group over the period: what the differencing check of the next
    release to this recipient compares with (store it in the release history)."""


def aggregate(
    readings: pd.DataFrame,
    households: pd.DataFrame,
    group_by: str = FEEDER,
    parent: str | None = SUBSTATION,
    min_members: int = 15,
    max_share: float = 0.15,
    min_members_residential: int = 100,
    residential: bool = True,
    interval: int | str | None = None,
    period: tuple[datetime, datetime] | None = None,
) -> Aggregated:
    """Group sums per released interval that pass the N and dominance rules in every interval.

    ``group_by``, ``parent``: households columns (each group lies under one parent; ``parent``
    None suppresses failing cells without merging). ``interval``: the released interval
    (seconds or ``"1h"``; None keeps the readings' own). ``period``: whole UTC days
    ``[start, end)``; None spans the days the readings touch.
    """
    rules = Rules.of(min_members, max_share, min_members_residential, residential)
    if parent is not None:
        require(households, (parent,), "households")
    matrix = lay_out(readings, households, group_by, interval, period)
    cells = _cells(matrix)
    few, dominated = rules.failures(cells.n, cells.total, cells.top)
    merge = _Merge.of(
        _parents(households, group_by, parent, matrix.grid.groups), cells, few | dominated, rules
    )
    children = _child_rows(matrix.grid, group_by, cells, rules.reasons(few, dominated), merge)
    frame = pd.concat([children, merge.rows(matrix.grid)], ignore_index=True)
    manifest = _manifest(len(readings), frame, group_by, matrix.grid, rules, merge)
    return Aggregated(frame, manifest, _member_sets(matrix, ~(few | dominated), merge))


def _cells(matrix: Matrix) -> Cells:
    assert matrix.present is not None
    top: F64 = np.maximum.reduceat(matrix.energy, matrix.grid.offsets[:-1], axis=0)
    n = by_group(matrix.present.astype(np.float32), matrix.grid)
    return Cells(n, by_group(matrix.energy, matrix.grid), top)


@dataclass(frozen=True)
class _Parents:
    level: str
    """The households column of the parents; "" when failing cells are not merged."""
    labels: pd.Index
    code: NDArray[np.intp]
    """The parent of each group."""


def _parents(
    households: pd.DataFrame, group_by: str, parent: str | None, groups: pd.Index
) -> _Parents:
    if parent is None:
        return _Parents("", pd.Index(["-"]), np.zeros(len(groups), dtype=np.intp))
    pairs = households[[group_by, parent]].drop_duplicates()
    if pairs[parent].isna().any() or (pairs[parent].astype(str).str.strip() == "").any():
        raise InvalidData(f"some households have an empty {parent}")
    twice = pairs[group_by].duplicated()
    if twice.any():
        raise InvalidData(f"{group_by} {pairs[group_by][twice].iloc[0]} lies under two {parent}s")
    under = pd.Series(pairs[parent].to_numpy(), index=pairs[group_by].to_numpy())
    code, labels = pd.factorize(under.reindex(groups), sort=True)
    return _Parents(parent, pd.Index(labels), code.astype(np.intp))


@dataclass(frozen=True)
class _Merge:
    """The failing cells summed per parent and interval, and re-checked."""

    parents: _Parents
    cells: Cells
    passed: Mask
    """(parents, slots): the merged cell holds members and passes the rules."""
    merged: Mask
    """(groups, slots): the cell failed and went into a passing parent cell."""

    @classmethod
    def of(cls, parents: _Parents, cells: Cells, fail: Mask, rules: Rules) -> _Merge:
        shape = (len(parents.labels), fail.shape[1])
        n, total, top = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        np.add.at(n, parents.code, np.where(fail, cells.n, 0.0))
        np.add.at(total, parents.code, np.where(fail, cells.total, 0.0))
        np.maximum.at(top, parents.code, np.where(fail, cells.top, 0.0))
        few, dominated = rules.failures(n, total, top)
        passed = ~(few | dominated) & bool(parents.level)
        return cls(parents, Cells(n, total, top), passed, fail & passed[parents.code])

    def rows(self, grid: Grid) -> pd.DataFrame:
        """One released row per passing merged cell."""
        parent, slot = np.nonzero(self.passed)
        children = np.zeros(self.passed.shape, dtype=np.int64)
        np.add.at(children, self.parents.code, self.merged.astype(np.int64))
        reason = np.char.add(children[parent, slot].astype(str), " failing cell(s) merged")
        total = pd.array(self.cells.total[parent, slot], dtype="Float64")
        columns = (self.parents.labels[parent], self.parents.level, self.cells.n[parent, slot])
        return _frame(grid, slot, *columns, total, np.full(len(slot), RELEASED), reason, None)


def _child_rows(
    grid: Grid, level: str, cells: Cells, reasons: NDArray[np.str_], merge: _Merge
) -> pd.DataFrame:
    group, slot = (i.ravel() for i in np.indices(reasons.shape))
    fail = reasons != ""
    status = np.where(fail, np.where(merge.merged, MERGED, WITHHELD), RELEASED).ravel()
    total = pd.array(cells.total.ravel(), dtype="Float64")
    total[fail.ravel()] = pd.NA
    parent = merge.parents.labels.to_numpy(dtype=object)[merge.parents.code][:, None]
    into: NDArray[np.object_] = np.full(merge.merged.shape, None, dtype=object)
    into[merge.merged] = np.broadcast_to(parent, into.shape)[merge.merged]
    columns = (grid.groups[group], level, cells.n.ravel())
    return _frame(grid, slot, *columns, total, status, reasons.ravel(), into.ravel())


def _frame(
    grid: Grid, slot: NDArray[np.intp], group: pd.Index, level: str, n: F64,
    energy: pd.api.extensions.ExtensionArray, status: NDArray[np.str_], reason: NDArray[np.str_],
    into: NDArray[np.object_] | None,
) -> pd.DataFrame:  # fmt: skip
    return pd.DataFrame(
        {
            GROUP: group.to_numpy(),
            LEVEL: level,
            START: grid.starts[slot],
            INTERVAL: grid.interval_s,
            MEMBERS: pd.array(n.astype(np.int64), dtype="Int64"),
            ENERGY: energy,
            STATUS: status,
            REASON: reason,
            MERGED_INTO: pd.array(into if into is not None else [None] * len(slot), dtype="str"),
        }
    )


def _member_sets(matrix: Matrix, released: Mask, merge: _Merge) -> tuple[MemberSet, ...]:
    """Every released group's members (meters reporting in a released cell of it)."""
    grid, present = matrix.grid, matrix.present
    assert present is not None
    group = np.repeat(np.arange(len(grid.groups)), grid.sizes)
    start, end = grid.starts[0], grid.starts[-1] + pd.Timedelta(seconds=grid.interval_s)
    own = np.nonzero((present & released[group]).any(axis=1))[0]
    into = np.nonzero((present & merge.merged[group]).any(axis=1))[0]
    parent = merge.parents.code[group[into]]
    own_sets = _sets(grid.groups, group[own], grid.meters[own], start, end)
    return own_sets + _sets(merge.parents.labels, parent, grid.meters[into], start, end)


def _sets(
    labels: pd.Index, code: NDArray[np.intp] | NDArray[np.int64], meters: pd.Index,
    start: pd.Timestamp, end: pd.Timestamp,
) -> tuple[MemberSet, ...]:  # fmt: skip
    if not len(code):
        return ()
    order = np.argsort(code, kind="stable")
    codes, first = np.unique(code[order], return_index=True)
    parts = np.split(meters.to_numpy()[order].astype(str), first[1:])
    return tuple(
        MemberSet(str(labels[c]), start, end, frozenset(p))
        for c, p in zip(codes, parts, strict=True)
    )


def _manifest(
    rows_in: int, frame: pd.DataFrame, group_by: str, grid: Grid, rules: Rules, merge: _Merge
) -> ReleaseManifest:
    released = frame[frame[STATUS] == RELEASED]
    status = frame[STATUS].value_counts()
    merged = f"merge({group_by} -> {merge.parents.level})" if merge.parents.level else "no merge"
    return ReleaseManifest(
        tier="aggregated",
        transforms=[
            f"sum({group_by}, {grid.interval_s} s)",
            f"threshold(members >= {rules.need}, share <= {rules.max_share} per interval)",
            merged,
        ],
        rows_in=rows_in,
        rows_out=len(frame),
        suppressed=int(status.get(WITHHELD, 0)),
        merged=int(status.get(MERGED, 0)),
        groups=len(grid.groups),
        min_group_size=int(released[MEMBERS].min()) if len(released) else None,
        notes=[
            "N and dominance checked in every released interval (CPUC D.14-05-016 15/15; "
            f"N >= {rules.need} here); withheld cells say why in 'reason'",
        ],
    )
