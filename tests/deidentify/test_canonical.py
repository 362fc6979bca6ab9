"""Canonical cells (X.1332 C4.3, R4.4, C3.3): whatever anyone holds of a unit's released cells,
at every granularity and merged, no combination isolates households the rules protect.

The oracle is brute force and knows nothing of the algorithm: on small units (3 feeders x 4
base intervals = 12 blocks) every one of the 4 095 non-empty block sets is tried; a set the
released cells span (some linear combination of them gives exactly its sum) must pass the N and
dominance rules computed from the raw data.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidentify.aggregate import Rules, aggregate
from deidentify.canonical import audit_recovery, canonical_cells, granularities_for
from deidentify.canonical_dp import dp_cells
from deidentify.differencing_ad import MemberSet, PastRelease, check_differencing
from deidentify.dp import Bounds
from deidentify.errors import DifferencingRefused
from deidentify.noise_ad import SeededUniforms, calibrate

BASE = 21_600  # four base intervals a day keep the brute force small
GRAINS = (21_600, 43_200, 86_400)
DAY = pd.Timestamp("2026-11-20", tz="UTC")


def _fleet(sizes: list[int], energy: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Households on feeders F-1.. under one substation; ``energy`` (households x 4) in Wh."""
    feeders = [f"F-{g + 1}" for g, n in enumerate(sizes) for _ in range(n)]
    meters = [f"m{i:03d}" for i in range(len(feeders))]
    households = pd.DataFrame({"meter_id": meters, "feeder": feeders, "substation": "S-1"})
    starts = [DAY + pd.Timedelta(seconds=BASE * s) for s in range(4)]
    readings = pd.DataFrame(
        {
            "meter_id": np.repeat(meters, 4),
            "start": pd.DatetimeIndex(starts * len(meters)),
            "interval_s": BASE,
            "energy_wh": energy.reshape(-1),
        }
    )
    return readings, households


def _released_blocks(frame: pd.DataFrame, sizes: list[int]) -> list[set[tuple[int, int]]]:
    """Every released row as its blocks (feeder index, base slot)."""
    merged = frame[frame["status"] == "merged"]
    out = []
    for _, row in frame[frame["status"] == "released"].iterrows():
        first = int((row["start"] - DAY).total_seconds()) // BASE
        slots = range(first, first + int(row["interval_s"]) // BASE)
        if row["level"] == "feeder":
            groups = [int(str(row["group"])[2:]) - 1]
        else:
            here = merged[
                (merged["start"] == row["start"]) & (merged["interval_s"] == row["interval_s"])
            ]
            groups = [int(str(g)[2:]) - 1 for g in here["group"]]
        out.append({(g, s) for g in groups for s in slots})
    return out


def _violations(
    blocks: list[set[tuple[int, int]]], sizes: list[int], energy: np.ndarray, rules: Rules
) -> list[frozenset[tuple[int, int]]]:
    """Block sets the released cells span that fail the rules (the brute-force attacker)."""
    universe = [(g, s) for g in range(len(sizes)) for s in range(4)]
    index = {b: i for i, b in enumerate(universe)}
    if not blocks:
        return []
    basis = np.zeros((len(universe), len(blocks)))
    for j, cell in enumerate(blocks):
        basis[[index[b] for b in cell], j] = 1
    projector = basis @ np.linalg.pinv(basis)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    found = []
    for r in range(1, len(universe) + 1):
        for subset in itertools.combinations(universe, r):
            v = np.zeros(len(universe))
            v[[index[b] for b in subset]] = 1
            if np.abs(projector @ v - v).max() > 1e-6:
                continue
            mask = np.zeros((len(sizes), 4), dtype=bool)
            for g, s in subset:
                mask[g, s] = True
            contribution = (energy * mask[owner]).sum(axis=1)
            n = int(mask[owner].any(axis=1).sum())
            few, dominated = rules.failures(
                np.array(n), np.array(contribution.sum()), np.array(contribution.max())
            )
            if few or dominated:
                found.append(frozenset(subset))
    return found


@st.composite
def _units(draw: st.DrawFn) -> tuple[list[int], np.ndarray, Rules]:
    sizes = draw(st.lists(st.integers(1, 9), min_size=3, max_size=3))
    need = draw(st.integers(2, 8))
    share = draw(st.sampled_from([0.3, 0.45, 0.6]))
    base = draw(st.lists(st.floats(0, 50), min_size=sum(sizes) * 4, max_size=sum(sizes) * 4))
    energy = np.array(base).reshape(sum(sizes), 4)
    spikes = draw(
        st.lists(st.tuples(st.integers(0, sum(sizes) - 1), st.integers(0, 3)), max_size=4)
    )
    for h, s in spikes:
        energy[h, s] += 400
    return sizes, energy, Rules(need, share)


@settings(max_examples=40, deadline=None)
@given(_units())
def test_C4_3_no_combination_of_released_cells_isolates_a_protected_set(
    unit: tuple[list[int], np.ndarray, Rules],
) -> None:
    sizes, energy, rules = unit
    readings, households = _fleet(sizes, energy)
    made = canonical_cells(readings, households, rules, granularities=GRAINS)
    (only,) = made.units
    released = _released_blocks(only.frame, sizes)
    assert _violations(released, sizes, energy, rules) == []
    assert audit_recovery(only) == []
    cells = only.frame[only.frame["status"] == "released"]
    assert (cells["members"] >= rules.need).all()


def test_C4_3_releasing_each_granularity_on_its_own_gives_a_withheld_cell_back() -> None:
    """The oracle has teeth: per-granularity aggregates (as released before canonical cells)
    let the hour minus its released parts give back a dominated interval, which canonical cells
    do not."""
    sizes = [6, 6, 2]
    energy = np.full((14, 4), 10.0)
    energy[0, 1] += 30  # one household holds 44 % of F-1's second interval, 26 % of its day
    rules = Rules(4, 0.3)
    readings, households = _fleet(sizes, energy)
    blocks: list[set[tuple[int, int]]] = []
    for grain in GRAINS:
        old = aggregate(readings, households, min_members=4, max_share=0.3, residential=False,
                        interval=grain)  # fmt: skip
        blocks += _released_blocks(old.frame, sizes)
    assert frozenset({(0, 1)}) in _violations(blocks, sizes, energy, rules)
    made = canonical_cells(readings, households, rules, granularities=GRAINS)
    assert _violations(_released_blocks(made.units[0].frame, sizes), sizes, energy, rules) == []


def test_R4_4_the_cells_do_not_depend_on_the_feeders_asked_for_or_their_order() -> None:
    sizes = [6, 3, 2]
    energy = np.random.default_rng(3).uniform(1, 20, (11, 4))
    rules = Rules(4, 0.5)
    readings, households = _fleet(sizes, energy)
    first = canonical_cells(readings, households, rules, granularities=GRAINS).units[0].frame
    shuffled = households.sample(frac=1, random_state=1)
    again = canonical_cells(readings.sample(frac=1, random_state=2), shuffled, rules,
                            granularities=GRAINS).units[0].frame  # fmt: skip
    pd.testing.assert_frame_equal(first, again)
    merged = first[first["level"] == "substation"]
    assert len(merged) and (merged["members"] == 5).all()  # F-2 and F-3, whoever asks


def test_granularities_follow_the_readings() -> None:
    assert granularities_for(900) == (900, 1800, 3600, 86_400)
    assert granularities_for(3600) == (3600, 86_400)


def test_R4_4_differencing_is_checked_against_every_recipient() -> None:
    start, end = DAY, DAY + pd.Timedelta(days=1)
    past = MemberSet("F-1", start, end, frozenset(f"m{i}" for i in range(100)))
    now = MemberSet("F-1", start, end, frozenset(f"m{i}" for i in range(1, 100)))
    history = [PastRelease("rl_1", "ems-a", (past,))]
    check_differencing([now], history, "ems-b")  # per recipient, as before: not seen
    with pytest.raises(DifferencingRefused, match="to a recipient"):
        check_differencing([now], history, None)


def test_C3_3_dp_cells_are_decided_by_the_hierarchy_and_merge_small_feeders() -> None:
    sizes = [5, 2, 2]
    energy = np.full((9, 4), 100.0)
    readings, households = _fleet(sizes, energy)
    bounds = Bounds.of(25_000, 2_000)
    cal = calibrate("laplace", 1.0, 0.0, bounds.l1(4), bounds.l2(4))
    (unit,) = dp_cells(readings, households, cal, bounds, 4, interval=BASE,
                       source=SeededUniforms(1))  # fmt: skip
    frame = unit.frame
    assert set(frame.loc[frame["status"] == "released", "group"]) == {"F-1", "S-1"}
    assert frame.loc[frame["group"].isin(["F-2", "F-3"]), "energy_wh"].isna().all()
    assert frame["members"].isna().all()  # counts are not released with noise
    (alone,) = dp_cells(readings, households, cal, bounds, 5, interval=BASE,
                        source=SeededUniforms(1))  # fmt: skip
    small = alone.frame[alone.frame["group"].isin(["F-2", "F-3"])]
    assert (small["status"] == "threshold not met").all()  # 4 together: still below 5
    assert "S-1" not in set(alone.frame["group"])
