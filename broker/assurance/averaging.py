"""Averaging two dp registrations, before and now.

Two EMS registrations ask dp hourly sums of the same feeders at ε = 1 and average them. Before,
each request drew its own noise on its own budget, so the average is closer to the truth and ε
is spent twice; now each unit's noise is drawn once, charged once to its household-days and
served unchanged to both (``_RecordedDraws``, as ``broker.release.cells`` serves dp cells), so
there is nothing to average.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from broker.assurance.measures import AT, INTERVAL_WH
from broker.assurance.substation import (
    ATTACK_RULES,
    BASE_S,
    DAY_S,
    DP_DAYS,
    DP_EPSILON,
    DP_INTERVAL_S,
)
from deidentify.aggregate import GROUP, LEVEL, RELEASED, STATUS
from deidentify.canonical_dp import dp_cells
from deidentify.dp import DAY_WH, Bounds, SeededUniforms, dp_aggregate
from deidentify.frames import ENERGY, FEEDER, METER, START, SUBSTATION
from deidentify.noise_ad import AUTO, Calibration, UniformSource, calibrate


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
