"""The report's attacker on per-request aggregates is the library's own (``audit_recovery``),
and what it derives is the truth: so "before" figures in ``broker privacy report`` are exact
recoveries, not an artefact of the helper that reads the old frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from broker.assurance.recovery import derive, old_blocks, recoverable
from deidentify.aggregate import Rules, aggregate
from deidentify.canonical import Unit, audit_recovery, canonical_cells
from tests.deidentify.test_canonical import BASE, DAY, GRAINS, _fleet


def test_old_frames_give_back_what_audit_recovery_finds_and_the_true_sums() -> None:
    sizes = [6, 6, 2]
    energy = np.full((14, 4), 10.0)
    energy[0, 1] += 30  # one household dominates F-1's second interval
    energy[6, 2] += 40  # and one F-2's third: each half-day goes into a merged cell with F-3
    readings, households = _fleet(sizes, energy)
    released, values, withheld = [], [], []
    for grain in GRAINS:
        old = aggregate(
            readings, households, min_members=4, max_share=0.3, residential=False, interval=grain
        )
        got, wh, held = old_blocks(old.frame, DAY, BASE)
        released += got
        values += wh
        withheld += held
    assert (("F-1", "F-3"), 0, 2) in released  # a merged row holds the feeders merged into it
    found = recoverable(released, withheld)
    unit = Unit("S-1", 0, pd.DataFrame(), (), tuple(released), tuple(withheld), BASE)
    assert found == audit_recovery(unit)
    assert (("F-1",), 1, 2) in found  # the day less its released intervals
    assert (("F-3",), 0, 4) in found  # the two-household feeder, never released on its own
    owner = np.repeat(np.arange(3), sizes)
    truth = [
        sum(energy[owner == int(g[2:]) - 1, a:b].sum() for g in groups) for groups, a, b in found
    ]
    assert derive(released, values, found) == pytest.approx(truth, abs=1e-6)


def test_canonical_cells_leave_the_same_attacker_nothing() -> None:
    sizes = [6, 6, 2]
    energy = np.full((14, 4), 10.0)
    energy[0, 1] += 30
    readings, households = _fleet(sizes, energy)
    (unit,) = canonical_cells(readings, households, Rules(4, 0.3), granularities=GRAINS).units
    assert unit.withheld_blocks
    assert recoverable(list(unit.released_blocks), list(unit.withheld_blocks)) == []
    assert audit_recovery(unit) == []
