"""Differential privacy on group sums: the ``dp`` tier (X.1332 C3.3, C4.3, R4.4).

``dp_aggregate`` releases, per group (feeder by default) and released interval, the sum of its
households' energy plus noise, such that the release changes little whether or not any one
household's day is in it. The parts, in the order they run:

* **Privacy unit: the household-day.** Each household's day is bounded before it is summed:
  its energy in each released interval is clipped to ``interval_wh``, then its day is scaled
  down, if needed, to at most ``day_wh`` in L1 (25 kWh by default; ``interval_wh`` has no
  default, as it depends on the interval: 2 000 Wh a quarter-hour is 8 kW). Both bounds are
  required (``InvalidParameter`` when missing): without them the sensitivity would have to
  be read from the data, which leaks.
* **Sensitivity across the released intervals.** One household-day touches the cells of one
  group on one day, at most ``interval_wh`` each and ``day_wh`` together, so the release's
  L1 sensitivity is ``Δ1 = min(day_wh, intervals_per_day x interval_wh)`` and its L2
  sensitivity ``Δ2 = sqrt(Δ1 x min(interval_wh, Δ1))`` (as ||x||² <= ||x||∞ ||x||1). Days
  are disjoint cells, so a release of several days costs the same ε per household-day.
* **Mechanism.** Laplace noise of scale ``Δ1/ε`` on every cell gives ε-DP for the whole
  release. When δ > 0 is allowed, the analytic Gaussian (Balle & Wang 2018) calibrated to
  ``Δ2`` may add less noise: Laplace pays for the whole day's L1 bound in every cell, the
  Gaussian for the L2 bound, which is much smaller when a day spreads over many intervals each
  bounded well below the day (25 kWh a day, 2 kWh a quarter-hour: Δ1 = 25 000 Wh but
  Δ2 ≈ 7 071 Wh). ``mechanism="auto"`` (the default) takes Laplace when δ = 0 and otherwise
  whichever has the smaller standard deviation per cell; the manifest says which, and only
  the Gaussian charges δ.
* **Budget.** ε (and δ) are charged to the recipient's rolling-window budget, rebuilt from
  the ledger rows given (``budget_ad``); a release that does not fit is refused with
  ``BudgetExceeded`` before any noise is drawn. ε <= 0 or above the per-release ceiling (1 by
  default) is ``InvalidParameter``. The new ledger row comes back in ``DPRelease.spend``: the
  caller stores it in the same transaction as the release.
* **Noise** is drawn for all cells at once with diffprivlib's samplers over a CSPRNG
  (``noise_ad``, which says why and how); diffprivlib calibrates it and keeps the accounts.
  Noisy sums are not rounded or clamped at zero: that would bias them.

The manifest reports the clipping apart from the noise: ``fraction_clipped`` (household-days
changed by clipping, of all the households' days in the release) and ``clipping_bias_wh``
(energy removed by clipping, >= 0). Both are exact figures of the data, not noised: they are for
the broker's audit and the regulator, not for the recipient.

Output frame (``DP_COLUMNS``), one row per group in the households frame and released interval
of the period, whether or not the group has readings (so one household cannot change which
rows exist): ``group`` (category), ``start`` (datetime64[UTC]), ``interval_s`` (int),
``energy_wh`` (float, noisy; may be negative). Member counts are not released: they would
need budget of their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from deidentify.budget_ad import PRIVACY_UNIT, BudgetRules, BudgetSpend, accountant, charge
from deidentify.cells_ad import F64, Grid, Matrix, by_group, lay_out
from deidentify.errors import InvalidParameter
from deidentify.frames import ENERGY, FEEDER, INTERVAL, START
from deidentify.manifest import ReleaseManifest
from deidentify.noise_ad import (
    AUTO,
    GAUSSIAN,
    LAPLACE,
    Calibration,
    SeededUniforms,
    SystemUniforms,
    UniformSource,
    calibrate,
    leaks_refused,
)

__all__ = [
    "AUTO",
    "DP_COLUMNS",
    "GAUSSIAN",
    "LAPLACE",
    "PRIVACY_UNIT",
    "Bounds",
    "BudgetRules",
    "BudgetSpend",
    "Calibration",
    "DPRelease",
    "SeededUniforms",
    "SystemUniforms",
    "UniformSource",
    "dp_aggregate",
    "leaks_refused",
]

GROUP = "group"
DP_COLUMNS = (GROUP, START, INTERVAL, ENERGY)
DAY_WH = 25_000.0


@dataclass(frozen=True)
class Bounds:
    """Clipping bounds of a household-day: per released interval and in L1 over the day."""

    day_wh: float
    interval_wh: float

    @classmethod
    def of(cls, day_wh: float | None, interval_wh: float | None) -> Bounds:
        named = {"day_wh": day_wh, "interval_wh": interval_wh}
        missing = [name for name, value in named.items() if value is None]
        if missing:
            raise InvalidParameter(f"clipping bound(s) missing: {', '.join(missing)} (Wh)")
        for name, value in named.items():
            if not (value is not None and math.isfinite(value) and value > 0):
                raise InvalidParameter(f"{name} must be a finite number of Wh > 0, got {value}")
        assert day_wh is not None and interval_wh is not None
        return cls(float(day_wh), float(interval_wh))

    def l1(self, per_day: int) -> float:
        """Δ1: the most one household-day can add to the release, summed over its cells."""
        return min(self.day_wh, per_day * self.interval_wh)

    def l2(self, per_day: int) -> float:
        """Δ2: the L2 norm of the most one household-day can add to the release's cells."""
        l1 = self.l1(per_day)
        return math.sqrt(l1 * min(self.interval_wh, l1))


@dataclass(frozen=True)
class Clipped:
    sums: F64
    """(groups, slots) sums of the clipped household-days."""
    fraction: float
    bias_wh: float


@dataclass(frozen=True)
class DPRelease:
    frame: pd.DataFrame
    manifest: ReleaseManifest
    spend: BudgetSpend
    """The ledger row to append for this release."""
    calibration: Calibration


def dp_aggregate(
    readings: pd.DataFrame,
    households: pd.DataFrame,
    *,
    recipient: str,
    ledger: Iterable[BudgetSpend],
    at: datetime,
    interval_wh: float | None = None,
    day_wh: float | None = DAY_WH,
    epsilon: float = 1.0,
    delta: float = 0.0,
    mechanism: str = AUTO,
    group_by: str = FEEDER,
    interval: int | str | None = None,
    period: tuple[datetime, datetime] | None = None,
    rules: BudgetRules = BudgetRules(),  # noqa: B008 (frozen, so one shared default is safe)
    source: UniformSource | None = None,
) -> DPRelease:
    """Noisy group sums per released interval, charged to ``recipient``'s budget.

    ``ledger``: the recipient's earlier spends (other recipients' rows are ignored); ``at``:
    when this release is made (timezone-aware). ``interval``/``period`` as in ``aggregate``.
    ``source``: where the noise's randomness comes from; None is the OS CSPRNG, and only tests
    should pass ``SeededUniforms``.
    """
    rules.check(epsilon, delta)
    bounds = Bounds.of(day_wh, interval_wh)
    budget = accountant(ledger, recipient, at, rules)
    matrix = lay_out(readings, households, group_by, interval, period, False, np.float32)
    per_day = matrix.grid.per_day
    cal = calibrate(mechanism, epsilon, delta, bounds.l1(per_day), bounds.l2(per_day))
    charge(budget, cal, recipient)
    clipped = clip(matrix, bounds)
    source = source if source is not None else SystemUniforms()
    noise = cal.draw(clipped.sums.size, source).reshape(clipped.sums.shape)
    with leaks_refused():
        budget.spend(cal.epsilon, cal.delta)
    manifest = _manifest(len(readings), matrix.grid, group_by, bounds, cal, clipped)
    manifest.budget_left = float(budget.remaining()[0])
    manifest.notes += [] if source.secure else ["seeded noise: reproducible, for tests only"]
    spend = BudgetSpend(recipient, at, cal.epsilon, cal.delta, cal.mechanism, PRIVACY_UNIT)
    return DPRelease(_frame(matrix.grid, clipped.sums + noise), manifest, spend, cal)


def clip(matrix: Matrix, bounds: Bounds) -> Clipped:
    """Bound every household-day of ``matrix`` (in place) and sum the groups."""
    grid = matrix.grid
    days = matrix.energy.reshape(len(grid.meters), grid.days, grid.per_day)
    raw = days.sum(axis=2, dtype=np.float64)
    np.minimum(days, bounds.interval_wh, out=days)
    capped = days.sum(axis=2, dtype=np.float64)
    over = capped > bounds.day_wh
    factor = np.ones_like(capped)
    np.divide(bounds.day_wh, capped, out=factor, where=over)
    days *= factor[:, :, np.newaxis].astype(days.dtype)
    changed = over | (capped < raw)
    bias = float((raw - capped).sum() + (capped[over] - bounds.day_wh).sum())
    fraction = float(changed.mean()) if changed.size else 0.0
    return Clipped(by_group(matrix.energy, grid), fraction, bias)


def _frame(grid: Grid, noisy: F64) -> pd.DataFrame:
    groups = len(grid.groups)
    codes = np.repeat(np.arange(groups), grid.slots)
    return pd.DataFrame(
        {
            GROUP: pd.Categorical.from_codes(codes, categories=grid.groups),
            START: grid.starts[np.tile(np.arange(grid.slots), groups)],
            INTERVAL: grid.interval_s,
            ENERGY: noisy.ravel(),
        }
    )


def _manifest(
    rows_in: int, grid: Grid, group_by: str, bounds: Bounds, cal: Calibration, clipped: Clipped
) -> ReleaseManifest:
    return ReleaseManifest(
        tier="dp",
        transforms=[
            f"clip(interval <= {bounds.interval_wh:g} Wh, day <= {bounds.day_wh:g} Wh L1)",
            f"sum({group_by}, {grid.interval_s} s)",
            f"{cal.mechanism}(ε={cal.epsilon:g}, δ={cal.delta:g}, Δ={cal.sensitivity:g} Wh)",
        ],
        rows_in=rows_in,
        rows_out=len(grid.groups) * grid.slots,
        groups=len(grid.groups),
        mechanism=cal.mechanism,
        epsilon=cal.epsilon,
        delta=cal.delta,
        privacy_unit=PRIVACY_UNIT,
        bounds={"day_wh": bounds.day_wh, "interval_wh": bounds.interval_wh},
        fraction_clipped=clipped.fraction,
        clipping_bias_wh=clipped.bias_wh,
        notes=[
            f"noise scale {cal.scale:.6g} Wh (sd {cal.sd:.6g} Wh) per cell",
            "fraction_clipped and clipping_bias_wh are exact, not noised: for the audit, "
            "not for the recipient",
        ],
    )
