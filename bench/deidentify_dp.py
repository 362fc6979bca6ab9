"""Differentially private aggregation of one day of a million meters, in memory.

Target: one day of 1 M meters x 96 quarter-hours aggregated to 10 k groups with DP
(clipping, Laplace noise from the OS CSPRNG, budget accounting) in <= 5 s. Prints one JSON
object: the median and every run of ``--repeats`` calls of ``deidentify.dp.dp_aggregate`` on
the same frames. The frames are built once, outside the timing, with ``meter_id`` as a
category (as a caller holding a million meters would pass it: 96 M Python strings would not
fit) and energies drawn from a gamma distribution (the timing does not depend on their shape).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from deidentify.dp import dp_aggregate
from deidentify.frames import ENERGY, FEEDER, INTERVAL, METER, START

DAY = pd.Timestamp("2026-11-20", tz="UTC")
INTERVALS = 96


def frames(meters: int, groups: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(readings, households): ``meters`` x 96 quarter-hours of one day, meters in ``groups``."""
    ids = pd.Index([f"M{i:08d}" for i in range(meters)])
    codes = np.repeat(np.arange(meters, dtype=np.int32), INTERVALS)
    step = pd.to_timedelta(np.arange(INTERVALS) * 900, unit="s")
    starts = pd.DatetimeIndex(DAY + step).as_unit("ns")
    readings = pd.DataFrame(
        {
            METER: pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(ids)),
            START: np.tile(starts, meters),
            INTERVAL: np.full(meters * INTERVALS, 900, dtype=np.int32),
            ENERGY: np.random.default_rng(seed).gamma(1.5, 60.0, meters * INTERVALS),
        },
        copy=False,
    )
    feeders = [f"F{g:05d}" for g in range(groups)]
    households = pd.DataFrame({METER: ids, FEEDER: [feeders[i % groups] for i in range(meters)]})
    return readings, households


def dp_aggregate_seconds(
    meters: int = 1_000_000, groups: int = 10_000, repeats: int = 3
) -> dict[str, object]:
    """The median and every run's seconds of ``dp_aggregate`` over one day of ``meters``."""
    readings, households = frames(meters, groups)
    at = datetime(2026, 11, 21, tzinfo=UTC)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        release = dp_aggregate(
            readings, households, recipient="ems", ledger=[], at=at, interval_wh=2_000.0
        )
        runs.append(time.perf_counter() - start)
    return {
        "benchmark": "deidentify_dp",
        "meters": meters,
        "groups": groups,
        "intervals": INTERVALS,
        "cells": len(release.frame),
        "mechanism": release.manifest.mechanism,
        "fraction_clipped": round(release.manifest.fraction_clipped or 0.0, 4),
        "repeats": repeats,
        "target_s": 5.0,
        "seconds_median": round(statistics.median(runs), 3),
        "seconds_all": [round(r, 3) for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(dp_aggregate_seconds(args.meters, args.groups, args.repeats)))


if __name__ == "__main__":
    main()
