"""``broker privacy report``: what each tier protects and what it costs in accuracy.

On the demo fleet grown from its own load model (``broker.assurance.population``):

- **Utility**: the error of released group sums against the truth, per released quarter-hour,
  as MAPE (mean absolute percentage error over the cells released), by group size N (100, 1 000,
  10 000 households) and ε (0.1, 0.5, 1, 2) for the ``dp`` tier; the ``aggregated`` tier is exact
  where released and withholds cells (its cost is the share of cells withheld).
- **Privacy**: the k the generalised tier reaches on the quasi-identifiers (postcode area,
  tariff, PV, EV) and the rows it suppressed; a linkage attack per tier — nearest neighbour
  between two weeks on the distribution of each record's readings, pseudonyms re-keyed in
  between. Pseudonymised data links well (it stays personal data, and the report says so);
  the generalised tier at most 1/k; aggregated and dp tiers release no household record.
- **Attacks** by recipients who pool what they receive, each run against the per-request
  aggregates released before canonical cells (``deidentify.aggregate.aggregate``,
  ``deidentify.dp.dp_aggregate``: "before") and against canonical cells as the broker serves
  them (``deidentify.canonical``, ``deidentify.canonical_dp``, ``broker.release.cells``: "now").
  They run on the fleet's first substation with its feeders cut to 110, 150 and 80 households,
  so that one feeder fails the N rule (100 residential households) and quiet night quarter-hours
  are dominated by one household: where the old per-request rules merged and withheld cells.
  ``attacks`` says how.

Writes ``privacy-report.json`` and ``error-by-group-size.png`` into the output directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from broker.assurance.population import Population, population
from connectors.meters.simulator import FEEDERS_PER_DISTRICT, METERS_PER_FEEDER
from deidentify.aggregate import (
    GROUP,
    LEVEL,
    MERGED,
    MERGED_INTO,
    RELEASED,
    STATUS,
    Aggregated,
    MemberSet,
    PastRelease,
    Rules,
    aggregate,
    check_differencing,
)
from deidentify.canonical import AGGREGATE_GRANULARITIES, Unit, audit_recovery, canonical_cells
from deidentify.canonical_dp import dp_cells
from deidentify.cells_ad import F64
from deidentify.dp import DAY_WH, Bounds, BudgetRules, SeededUniforms, dp_aggregate
from deidentify.errors import DifferencingRefused
from deidentify.frames import ENERGY, FEEDER, INTERVAL, METER, START, SUBSTATION
from deidentify.linkage import distribution_features, nearest_neighbour_linkage
from deidentify.noise_ad import AUTO, Calibration, UniformSource, calibrate
from deidentify.pseudonym import PseudonymKey
from deidentify.tiers import MEMBERS, TierParams, transform

SIZES = (100, 1_000, 10_000)
EPSILONS = (0.1, 0.5, 1.0, 2.0)
DAY0 = 20_400  # 2025-11-08, a winter Saturday... and a fortnight from it
INTERVAL_WH = 2_000.0
REPORT_RULES = BudgetRules(epsilon_ceiling=max(EPSILONS), epsilon_cap=max(EPSILONS))
REPORT = "privacy-report.json"
PLOT = "error-by-group-size.png"
AT = datetime(2026, 11, 25, tzinfo=UTC)
"""When the report's dp releases are made (only their budget window depends on it)."""


@dataclass
class Report:
    households: int
    seed: int
    utility: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "households": self.households,
            "seed": self.seed,
            "utility": self.utility,
            "privacy": self.privacy,
            "attacks": self.attacks,
        }


def _grouped(pop: Population, size: int, count: int) -> pd.DataFrame:
    """``count`` groups of ``size`` households each, as a households frame with ``group``."""
    hh = pop.households.iloc[: size * count].copy()
    hh["group"] = [f"G{i // size:05d}" for i in range(len(hh))]
    return hh


def utility(
    pop: Population,
    sizes: tuple[int, ...],
    epsilons: tuple[float, ...],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """MAPE of dp group sums per quarter-hour, and the aggregated tier's withheld share."""
    total = len(pop.households)
    readings = pop.readings(DAY0, 1)
    out: dict[str, Any] = {
        "interval": "15min",
        "interval_wh_bound": INTERVAL_WH,
        "dp_mape_percent": {},
        "aggregated": {},
    }
    for size in sizes:
        count = max(1, min(total // size, 10))
        hh = _grouped(pop, size, count)
        mine = readings[readings[METER].isin(hh[METER])]
        exact = aggregate(mine, hh, group_by="group", parent=None, residential=False)
        frame = exact.frame
        released = frame[frame["status"] == "released"]
        out["aggregated"][str(size)] = {
            "groups": count,
            "cells": len(frame),
            "withheld_fraction": round(1 - len(released) / max(len(frame), 1), 4),
            "error_where_released": 0.0,
        }
        all_truth = _truth(mine, hh)
        for epsilon in epsilons:
            progress(f"N={size} ε={epsilon}")
            # each figure is its own release on a fresh budget: the report measures error, it
            # releases nothing (a ceiling of 2 lets it show ε = 2 beside the default 1)
            noisy = dp_aggregate(
                mine,
                hh,
                recipient="privacy-report",
                ledger=[],
                at=AT,
                interval_wh=INTERVAL_WH,
                epsilon=epsilon,
                group_by="group",
                rules=REPORT_RULES,
            )
            got = noisy.frame.set_index(["group", START])[ENERGY].astype(float)
            ref = all_truth.reindex(got.index)
            mape = 100.0 * float(np.mean(np.abs(got - ref) / np.maximum(ref, 1.0)))
            out["dp_mape_percent"].setdefault(str(size), {})[str(epsilon)] = round(mape, 3)
    return out


def _truth(readings: pd.DataFrame, households: pd.DataFrame) -> pd.Series:
    joined = readings.merge(households[[METER, "group"]], on=METER)
    truth: pd.Series = joined.groupby(["group", START], observed=True)[ENERGY].sum().astype(float)
    return truth


def privacy(pop: Population, households: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """k reached and linkage accuracy per tier, on ``households`` households over two weeks."""
    pop_small = Population(pop.households.iloc[:households].reset_index(drop=True), pop.model)
    fortnight = pop_small.readings(DAY0, 14)
    split = fortnight[START].min() + pd.Timedelta(days=7)
    first, second = fortnight[fortnight[START] < split], fortnight[fortnight[START] >= split]
    week = 7 * 96
    progress("linkage: pseudonymised")
    key = PseudonymKey("privacy-report", bytes(32 * [7]))
    p1 = transform("pseudonymised", first, None, TierParams("15min", pseudonym_key=key)).frame
    rekeyed = TierParams("15min", pseudonym_key=key.rotated(bytes(32 * [9])))
    p2 = transform("pseudonymised", second, None, rekeyed).frame
    m1, m2 = p1[ENERGY].to_numpy().reshape(-1, week), p2[ENERGY].to_numpy().reshape(-1, week)
    pseudo = nearest_neighbour_linkage(
        distribution_features(m1), distribution_features(m2), np.arange(len(m1))
    )
    progress("linkage: generalised")
    g1 = transform("generalised", first, pop_small.households, TierParams("daily"))
    g2 = transform("generalised", second, pop_small.households, TierParams("daily"))
    general = _class_linkage(g1.frame, g2.frame)
    return {
        "households": households,
        "generalised": {
            "k_reached": g1.manifest.k_reached,
            "suppressed": g1.manifest.suppressed,
            "classes": g1.manifest.groups,
        },
        "linkage_accuracy": {
            "raw": {"accuracy": 1.0, "note": "identified: linked by the meter id itself"},
            "pseudonymised": {
                "accuracy": round(pseudo.accuracy, 4),
                "chance": round(pseudo.chance, 5),
                "note": "re-keyed between the weeks, linked by habits: still personal data",
            },
            "generalised": {
                "accuracy": round(general, 4),
                "bound_1_over_k": round(1 / max(g1.manifest.k_reached or 1, 1), 4),
            },
            "aggregated": {"accuracy": None, "note": "no household record is released"},
            "dp": {"accuracy": None, "note": "no household record is released"},
        },
    }


def _class_linkage(first: pd.DataFrame, second: pd.DataFrame) -> float:
    qis = ["postcode_area", "tariff", "has_pv", "has_ev"]

    def matrix(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        record = frame[qis].astype(str).agg("|".join, axis=1)
        wide = frame.assign(record=record).pivot_table(index="record", columns=START, values=ENERGY)
        sizes = frame.assign(record=record).groupby("record")[MEMBERS].first()
        return wide, sizes

    w1, sizes = matrix(first)
    w2, _ = matrix(second)
    common = w1.index.intersection(w2.index)
    counts = sizes.loc[common].to_numpy()
    a = np.repeat(w1.loc[common].to_numpy(), counts, axis=0)
    b = np.repeat(w2.loc[common].to_numpy(), counts, axis=0)
    return nearest_neighbour_linkage(a, b, np.arange(len(a))).accuracy


# --- attacks by recipients who pool what they receive ------------------------------------------

ATTACK_FEEDERS = (110, 150, 80)
"""Households kept of each feeder of the first substation (the fleet has 150 a feeder): one
feeder below the N rule, and few enough households that a night quarter-hour is dominated."""
MIN_MEMBERS, MAX_SHARE, RESIDENTIAL_FLOOR = 15, 0.15, 100
ATTACK_RULES = Rules.of(MIN_MEMBERS, MAX_SHARE, RESIDENTIAL_FLOOR, True)
"""The broker's rules for aggregates of households: N >= 100, no member above 15 %."""
BASE_S = 900
DP_INTERVAL_S = 3600
DP_DAYS = 7
DP_EPSILON = 1.0
DAY_S = 86_400
Block = tuple[tuple[str, ...], int, int]
"""A cell as the blocks it sums: (groups, first base slot, end slot) of its day."""


def attacks(seed: int, found: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Recipients pooling what they receive, against the per-request method ("before") and the
    canonical cells ("now"), on the first substation (``ATTACK_FEEDERS``); ``found`` is what
    ``privacy`` measured (its linkage after a re-key is the fourth attack)."""
    households, week = _substation(seed)
    first = week[START].min()
    day = week[week[START] < first + pd.Timedelta(days=1)]
    # the unit as the broker records it on the first request that needs it, and serves to all
    unit = canonical_cells(day, households, ATTACK_RULES).units[0]
    progress("attack: differencing across recipients after an erasure")
    differencing = cross_recipient_differencing(day, households, unit)
    progress("attack: withheld cells from every granularity")
    granularity = cross_granularity_recovery(day, households, unit)
    progress("attack: averaging two dp registrations")
    averaging = averaging_two_registrations(week, households, seed)
    sizes = households.groupby(FEEDER, observed=True).size()
    return {
        "setup": {
            "substation": unit.parent,
            "households_per_feeder": {str(f): int(n) for f, n in sizes.items()},
            "day": first.date().isoformat(),
            "rules": f"N >= {ATTACK_RULES.need} households, no member above "
            f"{ATTACK_RULES.max_share:.0%}, in every released interval",
            "before": "per-request aggregate / dp_aggregate: cells computed for each request, "
            "from the feeders it lists, fresh noise for each",
            "now": "canonical cells: one unit per substation-day from all its households at "
            "every granularity, recorded and served unchanged to every recipient; dp noise "
            "drawn once per unit, granularity and ε",
        },
        "cross_recipient_differencing": differencing,
        "cross_granularity_recovery": granularity,
        "averaging_two_registrations": averaging,
        "linkage_after_rekey": linkage_after_rekey(found),
    }


def _substation(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first substation's households, ``ATTACK_FEEDERS`` of each feeder, and their
    quarter-hour readings over ``DP_DAYS`` days from ``DAY0``."""
    fleet = population(FEEDERS_PER_DISTRICT * METERS_PER_FEEDER, seed)
    feeders = [group for _, group in fleet.households.groupby(FEEDER, sort=True)]
    kept = pd.concat(
        [group.iloc[:n] for group, n in zip(feeders, ATTACK_FEEDERS, strict=True)],
        ignore_index=True,
    )
    readings = fleet.readings(DAY0, DP_DAYS, BASE_S)
    readings = readings[readings[METER].isin(kept[METER])].reset_index(drop=True)
    readings[METER] = readings[METER].cat.remove_unused_categories()
    return kept, readings


def cross_recipient_differencing(
    day: pd.DataFrame, households: pd.DataFrame, unit: Unit
) -> dict[str, Any]:
    """A gets a feeder's quarter-hour sums; a household of it is erased; B asks the same.
    A - B is the household wherever B's cell holds A's members less that one."""
    sizes = households.groupby(FEEDER, observed=True).size()
    feeder = str(sizes.idxmax())  # the feeder released on its own in most quarter-hours
    mine = households[households[FEEDER] == feeder]
    erased = str(mine[METER].iloc[0])
    truth = day[day[METER] == erased].set_index(START)[ENERGY].astype(float)
    rest_hh, rest = mine[mine[METER] != erased], day[day[METER] != erased]

    # before: each request aggregates the households of the feeders it lists, as they are now
    a = _old(day[day[METER].isin(mine[METER])], mine, BASE_S)
    b = _old(rest[rest[METER].isin(rest_hh[METER])], rest_hh, BASE_S)
    past = [PastRelease("release-a", "recipient-a", a.members)]
    before = _subtract(a.frame, b.frame, feeder, truth)
    before["differencing_refused"] = _refused(b.members, past, "recipient-b")
    before["member_difference"] = _member_difference(b.members, a.members)

    # now: B is served the unit recorded for A; recomputing it without the household is what
    # the cross-recipient check refuses
    now = _subtract(unit.frame, unit.frame, feeder, truth)
    again = canonical_cells(rest, households[households[METER] != erased], ATTACK_RULES).units[0]
    past = [PastRelease("release-a", "recipient-a", unit.members)]
    now["differencing_refused"] = _refused(again.members, past, None)
    now["member_difference"] = _member_difference(again.members, unit.members)
    return {
        "feeder": feeder,
        "feeder_households": len(mine),
        "erased": erased,
        "interval_s": BASE_S,
        "before": before,
        "now": now,
        "note": "before, B's aggregate is recomputed without the erased household and checked "
        "against B's own history only; now B is served the cells recorded for A, and a "
        "recomputation would be refused against every recipient's history",
    }


def _old(readings: pd.DataFrame, households: pd.DataFrame, interval: int) -> Aggregated:
    return aggregate(
        readings,
        households,
        min_members=MIN_MEMBERS,
        max_share=MAX_SHARE,
        min_members_residential=RESIDENTIAL_FLOOR,
        residential=True,
        interval=interval,
    )


def _subtract(a: pd.DataFrame, b: pd.DataFrame, feeder: str, truth: pd.Series) -> dict[str, Any]:
    """A - B over the feeder's quarter-hours released to both, against the erased household."""

    def released(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame[
            (frame[GROUP] == feeder) & (frame[STATUS] == RELEASED) & (frame[INTERVAL] == BASE_S)
        ]
        return rows.set_index(START)

    ra, rb = released(a), released(b)
    both = ra.index.intersection(rb.index)
    diff = ra.loc[both, ENERGY].astype(float) - rb.loc[both, ENERGY].astype(float)
    # B's cell holds A's members less one (the erased household): A - B is that household
    alone = (ra.loc[both, "members"] - rb.loc[both, "members"]).to_numpy() == 1
    error = (diff - truth.reindex(both)).abs()[alone]
    return {
        "cells_released_to_both": len(both),
        "cells_recovered": int(alone.sum()),
        "max_abs_error_wh": float(error.max()) if len(error) else None,
        "household_wh_recovered": float(truth.reindex(both)[alone].sum()),
        "max_abs_a_minus_b_wh": float(diff.abs().max()) if len(diff) else 0.0,
    }


def _refused(members: tuple[MemberSet, ...], history: list[PastRelease], who: str | None) -> bool:
    try:
        check_differencing(members, history, who)
    except DifferencingRefused:
        return True
    return False


def _member_difference(new: tuple[MemberSet, ...], old: tuple[MemberSet, ...]) -> int | None:
    """The fewest members by which an overlapping set of ``new`` differs from one of ``old``."""
    gaps = [len(n.members ^ o.members) for n in new for o in old if n.overlaps(o)]
    return min((g for g in gaps if g), default=None)


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
        old = _old(day, households, grain).frame
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


def averaging_two_registrations(
    week: pd.DataFrame, households: pd.DataFrame, seed: int
) -> dict[str, Any]:
    """Two EMS registrations ask dp hourly sums of the same cells at ε = 1 and average them."""
    bounds = Bounds.of(DAY_WH, INTERVAL_WH * DP_INTERVAL_S / BASE_S)  # the report's 8 kW
    hours = week.assign(**{START: week[START].dt.floor(f"{DP_INTERVAL_S}s")})
    joined = hours.merge(households[[METER, FEEDER]], on=METER)
    truth = joined.groupby([FEEDER, START], observed=True)[ENERGY].sum().astype(float)
    truth.index = truth.index.set_names([GROUP, START])

    # before: each registration's request draws its own noise, on its own budget
    draws = [
        dp_aggregate(
            week,
            households,
            recipient=f"ems-{i}",
            ledger=[],
            at=AT,
            interval_wh=bounds.interval_wh,
            day_wh=bounds.day_wh,
            epsilon=DP_EPSILON,
            interval=DP_INTERVAL_S,
            source=SeededUniforms(seed + i),
        )
        for i in (1, 2)
    ]
    old = [d.frame.set_index([GROUP, START])[ENERGY].astype(float) for d in draws]
    before = _averaged(old, truth)
    before["draws"] = len(draws)
    before["epsilon_spent"] = float(sum(d.spend.epsilon for d in draws))

    # now: the first registration's request draws each unit once; the second is served it
    per_day = DAY_S // DP_INTERVAL_S
    cal = calibrate(AUTO, DP_EPSILON, 0.0, bounds.l1(per_day), bounds.l2(per_day))
    recorded = _RecordedDraws(cal, bounds)
    served = [recorded.serve(week, households, SeededUniforms(seed + 1)) for _ in (1, 2)]
    now = _averaged(served, truth)
    now["draws"] = recorded.draws
    now["epsilon_spent"] = max(recorded.spent.values())
    return {
        "interval_s": DP_INTERVAL_S,
        "epsilon": DP_EPSILON,
        "mechanism": cal.mechanism,
        "noise_sd_wh": round(cal.sd, 1),
        "days": DP_DAYS,
        "before": before,
        "now": now,
        "note": "ratio: RMSE of the two registrations' average against the exact sums, over "
        "the RMSE of one registration's values (1/√2 ≈ 0.71 for independent draws); "
        "epsilon_spent: ε charged to each household-day for the two registrations",
    }


def _averaged(values: list[pd.Series], truth: pd.Series) -> dict[str, Any]:
    exact = truth.reindex(values[0].index).to_numpy()
    one = values[0].to_numpy() - exact
    mean = sum(v.to_numpy() for v in values) / len(values) - exact
    rmse_one, rmse_mean = float(np.sqrt(np.mean(one**2))), float(np.sqrt(np.mean(mean**2)))
    return {
        "cells": len(exact),
        "rmse_one_wh": round(rmse_one, 1),
        "rmse_average_wh": round(rmse_mean, 1),
        "ratio": round(rmse_mean / rmse_one, 4),
    }


@dataclass
class _RecordedDraws:
    """dp cells as the broker serves them (``broker.release.cells``): each unit drawn once per
    granularity and ε, charged to its household-days, recorded, then served unchanged."""

    calibration: Calibration
    bounds: Bounds
    units: dict[tuple[str, int], pd.DataFrame] = field(default_factory=dict)
    spent: dict[tuple[str, int], float] = field(default_factory=dict)
    draws: int = 0

    def serve(
        self, readings: pd.DataFrame, households: pd.DataFrame, source: UniformSource
    ) -> pd.Series:
        first, last = (
            int(t.timestamp()) // DAY_S for t in (readings[START].min(), readings[START].max())
        )
        keys = [
            (str(p), d) for p in sorted(set(households[SUBSTATION])) for d in range(first, last + 1)
        ]
        if any(key not in self.units for key in keys):
            self.draws += 1
            noisy = dp_cells(
                readings,
                households,
                self.calibration,
                self.bounds,
                ATTACK_RULES.need,
                interval=DP_INTERVAL_S,
                source=source,
            )
            for unit in noisy:
                key = (unit.parent, unit.day)
                if key not in self.units:
                    self.units[key] = unit.frame
                    self.spent[key] = self.spent.get(key, 0.0) + self.calibration.epsilon
        frame = pd.concat([self.units[key] for key in keys], ignore_index=True)
        cells = frame[(frame[STATUS] == RELEASED) & (frame[LEVEL] == FEEDER)]
        return cells.set_index([GROUP, START])[ENERGY].astype(float)


def linkage_after_rekey(found: dict[str, Any]) -> dict[str, Any]:
    """The pseudonymised linkage ``privacy`` measured: the key was rotated between the weeks."""
    pseudo = found["linkage_accuracy"]["pseudonymised"]
    return {
        "households": found["households"],
        "before": {"relinked": pseudo["accuracy"]},
        "now": {"relinked": pseudo["accuracy"]},
        "chance": pseudo["chance"],
        "note": "share of households re-linked by habits across a pseudonym re-key (nearest "
        "neighbour between two weeks): the identifier changes, the time series remains a "
        "fingerprint. Canonical cells govern aggregates, not this tier: it is personal data",
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    table = report["utility"]["dp_mape_percent"]
    sizes = sorted(int(n) for n in table)
    for epsilon in sorted({float(e) for row in table.values() for e in row}):
        ax.plot(
            sizes,
            [table[str(n)][str(epsilon)] for n in sizes],
            marker="o",
            label=f"ε = {epsilon:g}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("households per group (N)")
    ax.set_ylabel("MAPE of quarter-hour sums (%)")
    ax.set_title("dp tier: error of group sums by group size and ε")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(
    out: Path, households: int, seed: int, linkage_households: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    pop = population(households, seed)
    sizes = tuple(n for n in SIZES if n <= households)
    report = Report(households, seed)
    report.utility = utility(pop, sizes, EPSILONS, progress)
    report.privacy = privacy(pop, min(linkage_households, households), progress)
    report.attacks = attacks(seed, report.privacy, progress)
    body = report.as_json()
    (out / REPORT).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    plot(body, out / PLOT)
    return body
