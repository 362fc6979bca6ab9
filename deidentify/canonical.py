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

The dp cells of a unit are ``deidentify.canonical_dp``'s; what both share (the hierarchy, the
unit frame's types) is ``deidentify.canonical_ad``'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from deidentify.aggregate import AGGREGATE_COLUMNS, MERGED, RELEASED, WITHHELD, Rules
from deidentify.canonical_ad import NS, Tree, tree_of, unit_frame
from deidentify.cells_ad import DAY_S, Matrix, lay_out
from deidentify.differencing_ad import MemberSet
from deidentify.errors import InvalidData, InvalidParameter
from deidentify.frames import FEEDER, INTERVAL, METER, START, SUBSTATION, require

__all__ = [
    "AGGREGATE_GRANULARITIES",
    "Canonical",
    "Unit",
    "audit_recovery",
    "canonical_cells",
    "granularities_for",
]

AGGREGATE_GRANULARITIES = (900, 1800, 3600, 86_400)
"""The released intervals of aggregates, in seconds, finest first."""
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
    tree = tree_of(households, group_by, parent, matrix)
    units = tuple(
        _compute_unit(matrix, tree, p, day, grains, rules, (group_by, parent))
        for p in range(len(tree.labels))
        for day in range(matrix.grid.days)
    )
    return Canonical(units, len(readings), rules, grains)


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
    matrix: Matrix, tree: Tree, p: int, day: int, grains: tuple[int, ...], rules: Rules,
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
    day0_ns = grid.first_ns + day * DAY_S * NS
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
        start = pd.Timestamp(self.day0_ns + a * self.base_s * NS, unit="ns", tz="UTC")
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
            int(self.day0_ns // (DAY_S * NS)),
            _unit_frame(self.rows),
            sets,
            tuple(_blocks(c, self.labels) for c in self.state.all_released()),
            tuple(_blocks(c, self.labels) for c in self.withheld),
            base_s,
        )


def _blocks(cell: Cell, labels: list[str]) -> tuple[tuple[str, ...], int, int]:
    return tuple(labels[g] for g in sorted(cell.groups)), cell.a, cell.b


def _unit_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(AGGREGATE_COLUMNS)
    frame = dict(zip(AGGREGATE_COLUMNS, columns, strict=True))
    return unit_frame({**frame, START: pd.DatetimeIndex(frame[START], tz="UTC")})


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
