"""Frames for the aggregation and DP tests: realistic load from the simulated fleet, or flat.

``fleet`` draws households from ``connectors.meters.load`` (kettles, cooking, EVs, PV), so that
the per-interval rules meet the peaks real homes have; ``flat`` gives load in a narrow band,
for tests that need every cell to pass and the arithmetic to be checked exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from connectors.meters.load import LoadModel
from deidentify.frames import ENERGY, FEEDER, INTERVAL, METER, START, SUBSTATION

DAY = pd.Timestamp("2026-11-20", tz="UTC")
DAY_NUMBER = (DAY - pd.Timestamp("1970-01-01", tz="UTC")).days


def meter_ids(count: int, offset: int = 0) -> list[str]:
    return [f"M{offset + i:06d}" for i in range(count)]


def readings_frame(
    meters: Sequence[str], wh: NDArray[np.float64], interval_s: int = 900
) -> pd.DataFrame:
    """Readings of ``meters`` (rows of ``wh``) over consecutive intervals from ``DAY``."""
    count = wh.shape[1]
    starts = DAY + pd.to_timedelta(np.arange(count) * interval_s, unit="s")
    return pd.DataFrame(
        {
            METER: np.repeat(np.asarray(meters, dtype=object), count),
            START: np.tile(starts, len(meters)),
            INTERVAL: interval_s,
            ENERGY: wh.ravel().astype(np.float64),
        }
    )


def households_frame(
    groups: Mapping[str, Sequence[str]], parents: Mapping[str, str]
) -> pd.DataFrame:
    """One row per meter: its feeder (key of ``groups``) and the feeder's substation."""
    rows = [(m, f, parents[f]) for f, meters in groups.items() for m in meters]
    return pd.DataFrame(rows, columns=[METER, FEEDER, SUBSTATION])


def fleet_wh(count: int, first: int = 0, seed: int = 5) -> NDArray[np.float64]:
    """(count, 96) quarter-hour imports of simulated households on ``DAY``."""
    model = LoadModel(seed)
    households = model.households(range(first, first + count))
    start_s = DAY_NUMBER * 86_400
    return model.energy_wh(households, start_s, 96, 900).astype(np.float64)


def flat_wh(count: int, intervals: int = 96, seed: int = 1) -> NDArray[np.float64]:
    """(count, intervals) imports between 100 and 120 Wh: no member ever dominates."""
    return np.random.default_rng(seed).uniform(100.0, 120.0, (count, intervals))
