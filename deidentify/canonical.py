"""Canonical cells: the one set of aggregate cells of a substation-day, the same for everyone.

A per-request aggregate protects its members against the recipient who asked, but two
recipients (or one, asking twice in different shapes) can combine what they receive:

* **Who asks decides the member set.** When the requested feeders decide which cells are merged,
  one recipient gets a substation cell merging three small feeders and another gets it without
  the one-household feeder; the difference is that household.
* **Granularities subtract.** A quarter-hour withheld because one household held more than 15 %
  of it comes back as the hour minus its three released quarters; subtracted from the
  substation cell it was merged into, it gives back another feeder that may never be released
  alone.

So the cells are computed once per **unit** (a parent group, a substation, and one UTC day),
from all of the unit's households and the feeder -> substation hierarchy only, at every
granularity at once, and recorded by the caller; every recipient is then served those recorded
cells, whichever feeders it lists.

**What the released cells of a unit may reveal.** A cell is a set of *blocks* (feeder x base
interval). The released cells of a unit are kept **laminar** (any two are disjoint or one holds
the other), so everything that can be derived from them by adding and subtracting is a
combination of their *atoms*: a cell's blocks less those of the released cells inside it. Every
atom must itself pass the N and dominance rules (``deidentify.aggregate.Rules``), with each
member's contribution its energy over the atom's blocks; an empty atom (a cell whose finer
cells are all released) reveals nothing new. A sum of disjoint atoms that each pass the rules
passes them too (the largest share of a sum is at most the largest share of its parts), so no
combination of released cells isolates a group of fewer than N households or one dominated by
a household. This is complementary suppression across granularities and merged cells.

Cells are admitted greedily in one fixed order (finest granularity first; within an interval,
the feeders in label order, then the merged cell of those that were not admitted), so the
result is a function of the data and the hierarchy alone:

1. the cell passes the rules itself;
2. it is laminar with every cell admitted before it (a feeder's hour is not released beside a
   merged quarter that holds that feeder and another: the two would subtract);
3. its atom (its blocks less the admitted cells inside it) is empty or passes the rules.

A feeder cell not admitted goes, with the others of its interval, into a merged cell of the
parent, checked by the same three steps; when that fails too, they are withheld. Withheld
cells say why in ``reason``.

``audit_recovery`` is the attacker: it tries to isolate every withheld block set from the
released cells by linear algebra; the tests and ``broker privacy report`` use it to show that
nothing withheld can be derived.

Differential privacy (``dp_cells``): the cells are decided from the hierarchy only (a feeder
with fewer than N registered households is merged into its substation; a merged cell below N is
withheld), never from the readings, so which cells exist reveals nothing outside the noise's
guarantee. The dominance rule is not applied to dp cells: clipping bounds what any one
household-day adds to a cell, which is what the rule protects against, and deciding a cell's
release on exact data would leak through the pattern of withheld cells.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from deidentify.aggregate import (
    AGGREGATE_COLUMNS,
    GROUP,
    LEVEL,
    MEMBERS,
    MERGED,
    MERGED_INTO,
    REASON,
    RELEASED,
    STATUS,
    WITHHELD,
    Rules,
)
from deidentify.cells_ad import DAY_S, Matrix, lay_out
from deidentify.differencing_ad import MemberSet
from deidentify.dp import Bounds, Clipped, clip
from deidentify.errors import InvalidData, InvalidParameter
from deidentify.frames import ENERGY, FEEDER, INTERVAL, METER, START, SUBSTATION, require
from deidentify.noise_ad import LAPLACE, Calibration, SystemUniforms, UniformSource

__all__ = [
    "AGGREGATE_GRANULARITIES",
    "Canonical",
    "NoisyUnit",
    "Unit",
    "audit_recovery",
    "canonical_cells",
    "dp_cells",
    "granularities_for",
]

AGGREGATE_GRANULARITIES = (900, 1800, 3600, 86_400)
"""The released intervals of aggregates, in seconds, finest first."""
_NS = 1_000_000_000
Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class Cell:
    """A set of blocks: the groups (local indices under the parent) x base slots ``[a, b)``."""

    groups: frozenset[int]
    a: int
    b: int

    def inside(self, other: Cell) -> bool:
        return self.groups <= other.groups and other.a <= self.a and self.b <= other.b

    def meets(self, other: Cell) -> bool:
        return bool(self.groups & other.groups) and self.a < other.b and other.a < self.b


@dataclass(frozen=True)
class Unit:
    """The recorded cells of one parent and day: rows in ``AGGREGATE_COLUMNS`` at every
    granularity, and the members of each released label over the day (for the history)."""

    parent: str
    day: int
    """Days since 1970-01-01 (UTC)."""
    frame: pd.DataFrame
    members: tuple[MemberSet, ...]
    released_blocks: tuple[tuple[tuple[str, ...], int, int], ...] = ()
    """Each released cell as (groups, first base slot, end slot): what ``audit_recovery``
    attacks."""
    withheld_blocks: tuple[tuple[tuple[str, ...], int, int], ...] = ()
    base_s: int = 900


@dataclass(frozen=True)
class Canonical:
    units: tuple[Unit, ...]
    rows_in: int
    rules: Rules
    granularities: tuple[int, ...]


def granularities_for(native_s: int) -> tuple[int, ...]:
    """The aggregate granularities a unit is computed at, given the readings' interval."""
    found = tuple(g for g in AGGREGATE_GRANULARITIES if g >= native_s and g % native_s == 0)
    if not found:
        raise InvalidData(f"readings of {native_s} s intervals fit no aggregate granularity")
    return found


def canonical_cells(
    readings: pd.DataFrame,
    households: pd.DataFrame,
    rules: Rules,
    *,
    group_by: str = FEEDER,
    parent: str = SUBSTATION,
    period: tuple[datetime, datetime] | None = None,
    granularities: Sequence[int] | None = None,
) -> Canonical:
    """Every unit (parent x day) of ``households`` over ``period``: the cells at every
    granularity, admitted as the module text says. ``households`` must list every household of
    each parent it names (the cells of a unit depend on all of them)."""
    require(households, (METER, group_by, parent), "households")
    native = int(readings[INTERVAL].max()) if len(readings) else 0
    grains = tuple(sorted(granularities or granularities_for(native)))
    base = grains[0]
    if any(g % base or DAY_S % g for g in grains):
        raise InvalidParameter(
            f"granularities {grains} must be multiples of {base} s and divide a day"
        )
    matrix = lay_out(readings, households, group_by, base, period)
    tree = _tree(households, group_by, parent, matrix)
    units = tuple(
        _compute_unit(matrix, tree, p, day, grains, rules, (group_by, parent))
        for p in range(len(tree.labels))
        for day in range(matrix.grid.days)
    )
    return Canonical(units, len(readings), rules, grains)


@dataclass(frozen=True)
class _Tree:
    labels: pd.Index
    """The parents' labels."""
    children: tuple[NDArray[np.intp], ...]
    """Per parent, the indices of its groups in the grid (label order)."""


def _tree(households: pd.DataFrame, group_by: str, parent: str, matrix: Matrix) -> _Tree:
    pairs = households[[group_by, parent]].drop_duplicates()
    blank = pairs[parent].isna() | (pairs[parent].astype(str).str.strip() == "")
    if blank.any():
        raise InvalidData(f"some households have an empty {parent}")
    twice = pairs[group_by].duplicated()
    if twice.any():
        raise InvalidData(f"{group_by} {pairs[group_by][twice].iloc[0]} lies under two {parent}s")
    under = pd.Series(pairs[parent].to_numpy(), index=pairs[group_by].to_numpy())
    of_group = under.reindex(matrix.grid.groups).to_numpy()
    labels = pd.Index(sorted(set(of_group)))
    children = tuple(np.flatnonzero(of_group == label) for label in labels)
    return _Tree(labels, children)


@dataclass
class _State:
    """The unit being admitted: its households' energy and presence at the base interval."""

    energy: NDArray[np.float64]
    """(rows, slots of the day) of the unit's households."""
    present: Mask
    local: NDArray[np.intp]
    """Each row's group, as an index into the unit's groups."""
    rules: Rules
    steps: tuple[int, ...]
    """The granularities as base slots, finest first."""
    released: dict[tuple[int, int], list[Cell]] = field(default_factory=dict)
    """The admitted cells by their slot range."""

    def near(self, a: int, b: int) -> Iterator[Cell]:
        """The admitted cells whose time range meets ``[a, b)`` (ranges are aligned)."""
        for step in self.steps:
            for i in range(a // step, (b - 1) // step + 1):
                yield from self.released.get((i * step, (i + 1) * step), ())

    def all_released(self) -> list[Cell]:
        return [cell for cells in self.released.values() for cell in cells]

    def stats(self, mask: Mask) -> tuple[float, float, float]:
        """(members, total, largest member) of the blocks ``mask`` (groups x slots)."""
        rows = mask[self.local]
        contribution = np.einsum("ij,ij->i", self.energy, rows)
        n = float((self.present & rows).any(axis=1).sum())
        return n, float(contribution.sum()), float(contribution.max(initial=0.0))

    def fails(self, mask: Mask) -> str:
        n, total, top = self.stats(mask)
        few, dominated = self.rules.failures(np.array(n), np.array(total), np.array(top))
        return str(self.rules.reasons(np.atleast_1d(few), np.atleast_1d(dominated))[0])

    def admit(self, cell: Cell, groups: int) -> str:
        """ "" when ``cell`` may be released beside the cells admitted so far, else why not."""
        atom = np.zeros((groups, self.energy.shape[1]), dtype=bool)
        atom[sorted(cell.groups), cell.a : cell.b] = True
        for other in self.near(cell.a, cell.b):
            if not other.meets(cell):
                continue
            if not other.inside(cell):
                return "withheld with a released cell it overlaps in part (complementary)"
            atom[sorted(other.groups), other.a : other.b] = False
        if atom.any():
            why = self.fails(atom)
            if why:
                return f"what is left beside its released finer cells: {why} (complementary)"
        self.released.setdefault((cell.a, cell.b), []).append(cell)
        return ""


def _compute_unit(
    matrix: Matrix, tree: _Tree, p: int, day: int, grains: tuple[int, ...], rules: Rules,
    levels: tuple[str, str],
) -> Unit:  # fmt: skip
    grid = matrix.grid
    assert matrix.present is not None
    groups = tree.children[p]
    per_day = DAY_S // grains[0]
    cols = slice(day * per_day, (day + 1) * per_day)
    rows = np.concatenate([np.arange(grid.offsets[g], grid.offsets[g + 1]) for g in groups])
    sizes = grid.sizes[groups]
    state = _State(
        np.ascontiguousarray(matrix.energy[rows, cols], dtype=np.float64),
        matrix.present[rows, cols],
        np.repeat(np.arange(len(groups)), sizes).astype(np.intp),
        rules,
        tuple(g // grains[0] for g in grains),
    )
    day0_ns = grid.first_ns + day * DAY_S * _NS
    build = _Builder(
        state, [str(grid.groups[g]) for g in groups], str(tree.labels[p]), levels,
        grid.meters.to_numpy()[rows].astype(str), sizes < rules.need, day0_ns, grains[0],
    )  # fmt: skip
    for grain in grains:
        step = grain // grains[0]
        for i in range(per_day // step):
            build.interval(i * step, (i + 1) * step, grain)
    return build.unit(grains[0])


@dataclass
class _Builder:
    """The rows of one unit, interval by interval: the large groups' own cells, then the merged
    cell of the small ones (fewer registered households than N: never released alone)."""

    state: _State
    labels: list[str]
    parent: str
    levels: tuple[str, str]
    meters: NDArray[np.str_]
    small: Mask
    day0_ns: int
    base_s: int
    rows: list[tuple[object, ...]] = field(default_factory=list)
    withheld: list[Cell] = field(default_factory=list)
    members: dict[str, set[str]] = field(default_factory=dict)

    def interval(self, a: int, b: int, grain: int) -> None:
        start = pd.Timestamp(self.day0_ns + a * self.base_s * _NS, unit="ns", tz="UTC")
        for g in (int(i) for i in np.flatnonzero(~self.small)):
            why, n, total = self._try(frozenset({g}), a, b)
            status = WITHHELD if why else RELEASED
            energy = None if why else total
            self.rows.append(
                (self.labels[g], self.levels[0], start, grain, n, energy, status, why, None)
            )
        small = [int(g) for g in np.flatnonzero(self.small)]
        if not small:
            return
        why, n, total = self._try(frozenset(small), a, b)
        for k in small:
            self._small_row(k, start, grain, a, b, why)
        if not why:
            note = f"{len(small)} group(s) below {self.state.rules.need} households merged"
            self.rows.append(
                (self.parent, self.levels[1], start, grain, n, total, RELEASED, note, None)
            )

    def _try(self, groups: frozenset[int], a: int, b: int) -> tuple[str, int, float]:
        mask = np.zeros((len(self.labels), self.state.energy.shape[1]), dtype=bool)
        mask[sorted(groups), a:b] = True
        n, total, _top = self.state.stats(mask)
        cell = Cell(groups, a, b)
        why = self.state.fails(mask) or self.state.admit(cell, len(self.labels))
        if why:
            self.withheld.append(cell)
        else:
            label = (
                self.labels[next(iter(groups))]
                if len(groups) == 1 and not self.small[next(iter(groups))]
                else self.parent
            )
            here = np.isin(self.state.local, sorted(groups)) & self.state.present[:, a:b].any(
                axis=1
            )
            self.members.setdefault(label, set()).update(self.meters[here].tolist())
        return why, int(n), total

    def _small_row(self, g: int, start: pd.Timestamp, grain: int, a: int, b: int, why: str) -> None:
        mask = np.zeros((len(self.labels), self.state.energy.shape[1]), dtype=bool)
        mask[g, a:b] = True
        n, _total, _top = self.state.stats(mask)
        alone = f"fewer than {self.state.rules.need} registered households"
        status, into = (WITHHELD, None) if why else (MERGED, self.parent)
        reason = f"{alone}; merged cell: {why}" if why else alone
        self.rows.append(
            (self.labels[g], self.levels[0], start, grain, int(n), None, status, reason, into)
        )

    def unit(self, base_s: int) -> Unit:
        start = pd.Timestamp(self.day0_ns, unit="ns", tz="UTC")
        end = start + pd.Timedelta(days=1)
        sets = tuple(
            MemberSet(label, start, end, frozenset(m)) for label, m in sorted(self.members.items())
        )
        return Unit(
            self.parent,
            int(self.day0_ns // (DAY_S * _NS)),
            _unit_frame(self.rows),
            sets,
            tuple(_blocks(c, self.labels) for c in self.state.all_released()),
            tuple(_blocks(c, self.labels) for c in self.withheld),
            base_s,
        )


def _blocks(cell: Cell, labels: list[str]) -> tuple[tuple[str, ...], int, int]:
    return tuple(labels[g] for g in sorted(cell.groups)), cell.a, cell.b


def _unit_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(AGGREGATE_COLUMNS))
    frame[START] = pd.to_datetime(frame[START], utc=True)
    frame[INTERVAL] = frame[INTERVAL].astype(np.int64)
    frame[MEMBERS] = frame[MEMBERS].astype("Int64")
    frame[ENERGY] = frame[ENERGY].astype("Float64")
    frame[MERGED_INTO] = frame[MERGED_INTO].astype("str")
    frame[REASON] = frame[REASON].fillna("").astype(str)
    return frame


def audit_recovery(unit: Unit, tolerance: float = 1e-9) -> list[tuple[tuple[str, ...], int, int]]:
    """The withheld cells of ``unit`` that a linear combination of its released cells gives back
    exactly (the attacker's best: anyone holding every released cell of every granularity).
    Empty when complementary suppression holds. Blocks are (group, base slot) pairs."""
    index: dict[tuple[str, int], int] = {}

    def vector(cell: tuple[tuple[str, ...], int, int]) -> NDArray[np.float64]:
        groups, a, b = cell
        v = np.zeros(len(index))
        for g in groups:
            for s in range(a, b):
                v[index[(g, s)]] = 1.0
        return v

    for groups, a, b in (*unit.released_blocks, *unit.withheld_blocks):
        for g in groups:
            for s in range(a, b):
                index.setdefault((g, s), len(index))
    if not unit.released_blocks:
        return []
    basis = np.array([vector(c) for c in unit.released_blocks]).T
    recovered = []
    for cell in unit.withheld_blocks:
        target = vector(cell)
        coef, *_ = np.linalg.lstsq(basis, target, rcond=None)
        if np.abs(basis @ coef - target).max() < 1e-6 + tolerance:
            recovered.append(cell)
    return recovered


def iter_rows(units: Sequence[Unit]) -> Iterator[pd.DataFrame]:
    for unit in units:
        yield unit.frame


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
    tree = _tree(households, group_by, parent, matrix)
    clipped = clip(matrix, bounds)
    source = source if source is not None else SystemUniforms()
    return tuple(
        _noisy_unit(matrix, tree, clipped, p, day, calibration, need, source, (group_by, parent))
        for p in range(len(tree.labels))
        for day in range(matrix.grid.days)
    )


def _noisy_unit(
    matrix: Matrix, tree: _Tree, clipped: Clipped, p: int, day: int, cal: Calibration,
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
    day_index = int((grid.first_ns // (DAY_S * _NS)) + day)
    return NoisyUnit(
        parent, day_index, pd.concat(frames, ignore_index=True), clipped.fraction, clipped.bias_wh
    )


def _noisy_rows(
    group: str, level: str, starts: pd.DatetimeIndex, interval_s: int,
    values: NDArray[np.float64] | None, status: str, reason: str, into: str | None,
) -> pd.DataFrame:  # fmt: skip
    n = len(starts)
    energy = pd.array([pd.NA] * n if values is None else values, dtype="Float64")
    return pd.DataFrame(
        {
            GROUP: group,
            LEVEL: level,
            START: starts,
            INTERVAL: interval_s,
            MEMBERS: pd.array([pd.NA] * n, dtype="Int64"),
            ENERGY: energy,
            STATUS: status,
            REASON: reason,
            MERGED_INTO: pd.array([into] * n, dtype="str"),
        }
    )
