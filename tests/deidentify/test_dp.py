"""Self-tests of the dp tier's mechanisms (X.1332 C3.3, C4.3, R4.4): the noise has the scale
the sensitivity and ε call for (and a wrong scale would be caught), the vectorised draws have
diffprivlib's distribution, no cell is released exact, clipping is reported apart from the
noise, and the budget refuses at its cap, forgets spends older than its window, and is charged
before any noise is drawn."""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from diffprivlib.mechanisms import GaussianAnalytic, Laplace
from diffprivlib.utils import PrivacyLeakWarning
from scipy import stats

from bench.deidentify_dp import dp_aggregate_seconds
from deidentify.dp import (
    GAUSSIAN,
    LAPLACE,
    PRIVACY_UNIT,
    BudgetRules,
    BudgetSpend,
    Calibration,
    DPRelease,
    SeededUniforms,
    dp_aggregate,
    leaks_refused,
)
from deidentify.errors import BudgetExceeded, InvalidData, InvalidParameter
from deidentify.frames import ENERGY
from tests.deidentify.fleet_ad import flat_wh, fleet_wh, households_frame, meter_ids, readings_frame

AT = datetime(2026, 11, 21, 6, tzinfo=UTC)
DRAWS = 20_000
P_ACCEPT = 1e-3  # seeded draws: each test's p-value is fixed, so these cannot flake
P_REJECT = 1e-6


def _fleet(groups: int, per_group: int, wh: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    meters = meter_ids(groups * per_group)
    feeders = {f"F{g:03d}": meters[g * per_group : (g + 1) * per_group] for g in range(groups)}
    households = households_frame(feeders, dict.fromkeys(feeders, "S1"))
    return readings_frame(meters, wh), households


def _release(readings: pd.DataFrame, households: pd.DataFrame, **kw: object) -> DPRelease:
    args: dict[str, object] = {"recipient": "ems", "ledger": [], "at": AT, "interval_wh": 2_000.0}
    args.update(kw)
    return dp_aggregate(readings, households, **args)  # type: ignore[arg-type]


def _true_sums(wh: np.ndarray, groups: int) -> np.ndarray:
    sums: np.ndarray = wh.reshape(groups, -1, wh.shape[1]).sum(axis=1).ravel()
    return sums


def test_laplace_noise_scale_is_sensitivity_over_epsilon() -> None:
    """10 080 cells (105 feeders x 96 quarter-hours) released at ε = 0.5 with no clipping at
    work: the noise (release minus truth) is Laplace with b = Δ1/ε = 25 000/0.5 Wh by a KS test,
    and the same test rejects b x 1.25 and b x 0.8, so it can fail."""
    wh = flat_wh(210).round()
    readings, households = _fleet(105, 2, wh)
    release = _release(readings, households, epsilon=0.5, source=SeededUniforms(11))

    noise = release.frame[ENERGY].to_numpy() - _true_sums(wh, 105)
    assert len(noise) >= 10_000
    assert release.calibration.sensitivity == 25_000.0
    assert release.calibration.scale == 50_000.0
    assert stats.kstest(noise, stats.laplace(scale=50_000.0).cdf).pvalue > P_ACCEPT
    for wrong in (1.25, 0.8):
        assert stats.kstest(noise, stats.laplace(scale=50_000.0 * wrong).cdf).pvalue < P_REJECT


def test_gaussian_noise_has_the_analytic_calibration() -> None:
    """δ > 0 with a quarter-hour bound well below the day's: the analytic Gaussian on
    Δ2 = sqrt(25 000 x 2 000) Wh adds less noise than Laplace, and its noise is normal with
    the standard deviation diffprivlib calibrated."""
    wh = flat_wh(210).round()
    readings, households = _fleet(105, 2, wh)
    release = _release(readings, households, delta=1e-7, source=SeededUniforms(12))

    cal = release.calibration
    assert cal.mechanism == GAUSSIAN
    assert cal.sensitivity == pytest.approx(math.sqrt(25_000 * 2_000))
    assert cal.sd < math.sqrt(2) * 25_000
    noise = release.frame[ENERGY].to_numpy() - _true_sums(wh, 105)
    assert stats.kstest(noise, stats.norm(scale=cal.scale).cdf).pvalue > P_ACCEPT
    assert stats.kstest(noise, stats.norm(scale=cal.scale * 1.2).cdf).pvalue < P_REJECT
    assert release.spend.delta == 1e-7


def test_auto_keeps_laplace_where_the_gaussian_would_add_more_noise() -> None:
    """A quarter-hour bound as large as the day's makes Δ2 = Δ1: Laplace wins and charges δ = 0."""
    readings, households = _fleet(2, 2, flat_wh(4))
    release = _release(readings, households, delta=1e-7, interval_wh=25_000.0)
    assert release.calibration.mechanism == LAPLACE
    assert release.spend.delta == 0.0
    assert release.manifest.delta == 0.0


@pytest.mark.parametrize("mechanism", [LAPLACE, GAUSSIAN])
def test_vectorised_draws_have_diffprivlibs_distribution(mechanism: str) -> None:
    """Two-sample KS: 20 000 draws of the vectorised sampler against 20 000 of diffprivlib's own
    ``randomise`` for the same ε and sensitivity; against a sensitivity 25 % larger, rejected."""
    epsilon, delta, sensitivity = 0.7, 1e-6, 10_000.0

    def diffprivlib(scale: float, seed: int) -> np.ndarray:
        if mechanism == LAPLACE:
            mech = Laplace(
                epsilon=epsilon, delta=0.0, sensitivity=sensitivity * scale, random_state=seed
            )
        else:
            mech = GaussianAnalytic(
                epsilon=epsilon, delta=delta, sensitivity=sensitivity * scale, random_state=seed
            )
        return np.array([mech.randomise(0.0) for _ in range(DRAWS)])

    if mechanism == LAPLACE:
        cal = Calibration(LAPLACE, epsilon, 0.0, sensitivity, sensitivity / epsilon)
    else:
        sd = math.sqrt(
            GaussianAnalytic(epsilon=epsilon, delta=delta, sensitivity=sensitivity).variance(0)
        )
        cal = Calibration(GAUSSIAN, epsilon, delta, sensitivity, sd)
    ours = cal.draw(DRAWS, SeededUniforms(21))
    assert stats.ks_2samp(ours, diffprivlib(1.0, 22)).pvalue > P_ACCEPT
    assert stats.ks_2samp(ours, diffprivlib(1.25, 23)).pvalue < P_REJECT


def test_no_released_cell_equals_its_true_value() -> None:
    """Noise from the OS CSPRNG (the default source): every cell differs from the truth."""
    wh = fleet_wh(200)
    readings, households = _fleet(20, 10, wh)
    release = _release(readings, households, interval_wh=3_000.0, day_wh=60_000.0)
    assert not release.manifest.fraction_clipped
    released = release.frame[ENERGY].to_numpy()
    assert np.all(released != _true_sums(wh, 20))
    assert not any("seeded" in note for note in release.manifest.notes)


def test_clipping_bias_is_reported_apart_from_noise() -> None:
    """One home imports 40 320 Wh in the day (above 25 000) and another 3 000 Wh in one
    quarter-hour (above 2 000): the manifest reports exactly the 15 320 + 1 000 Wh removed,
    2 of 200 household-days clipped, while the noise around the clipped truth averages ~0."""
    wh = flat_wh(200).round()
    wh[0] = 420.0
    wh[1, 40] = 3_000.0
    readings, households = _fleet(100, 2, wh)
    release = _release(readings, households, source=SeededUniforms(31))

    assert release.manifest.clipping_bias_wh == pytest.approx(16_320.0)
    assert release.manifest.fraction_clipped == pytest.approx(2 / 200)
    clipped = wh.copy()
    clipped[0] *= 25_000.0 / 40_320.0
    clipped[1, 40] = 2_000.0
    noise = release.frame[ENERGY].to_numpy() - _true_sums(clipped, 100)
    sd = release.calibration.sd
    assert abs(noise.mean()) < 4 * sd / math.sqrt(len(noise))


def test_realistic_homes_are_clipped_by_the_quarter_hour_bound() -> None:
    """Simulated homes with kettles and EVs against a 1 kWh quarter-hour bound: some
    household-days are clipped, and the bias is what clipping removed, apart from the noise."""
    wh = fleet_wh(200)
    readings, households = _fleet(20, 10, wh)
    release = _release(readings, households, interval_wh=1_000.0, source=SeededUniforms(32))
    capped = np.minimum(wh, 1_000.0)
    capped *= np.minimum(1.0, 25_000.0 / capped.sum(axis=1, keepdims=True))
    assert 0 < (release.manifest.fraction_clipped or 0) < 1
    assert release.manifest.clipping_bias_wh == pytest.approx(wh.sum() - capped.sum(), rel=1e-6)


# The budget: a diffprivlib BudgetAccountant rebuilt from the ledger rows for each release.


class _NoNoise:
    """A noise source that fails the test if anything is drawn from it."""

    secure = True

    def uniforms(self, count: int) -> np.ndarray:
        raise AssertionError("noise was drawn for a refused release")


def _spends(*epsilons: float, ago: timedelta = timedelta(days=1)) -> list[BudgetSpend]:
    return [BudgetSpend("ems", AT - ago, e, 0.0) for e in epsilons]


def test_a_release_that_fits_the_cap_exactly_is_made_and_one_above_is_refused() -> None:
    readings, households = _fleet(2, 2, flat_wh(4))
    rules = BudgetRules(epsilon_cap=3.0)
    release = _release(readings, households, ledger=_spends(1.0, 1.5), epsilon=0.5, rules=rules)
    assert release.manifest.budget_left == pytest.approx(0.0, abs=1e-9)
    assert release.spend == BudgetSpend("ems", AT, 0.5, 0.0, LAPLACE, PRIVACY_UNIT)
    with pytest.raises(BudgetExceeded, match="would exceed ems's budget"):
        _release(
            readings,
            households,
            ledger=_spends(1.0, 1.5),
            epsilon=0.75,
            rules=rules,
            source=_NoNoise(),
        )
    with pytest.raises(BudgetExceeded, match="above the cap"):
        _release(
            readings,
            households,
            ledger=_spends(1.0, 1.0, 1.0, 0.5),
            epsilon=0.1,
            rules=rules,
            source=_NoNoise(),
        )


def test_spends_older_than_the_rolling_window_expire() -> None:
    """A spend exactly 30 days old no longer counts; one a second younger still does; other
    recipients' spends never count."""
    readings, households = _fleet(2, 2, flat_wh(4))
    rules = BudgetRules(epsilon_cap=2.0)
    expired = _spends(1.5, ago=timedelta(days=30))
    live = _spends(1.5, ago=timedelta(days=30) - timedelta(seconds=1))
    others = [BudgetSpend("acme", AT, 1.0, 0.0)]
    release = _release(readings, households, ledger=expired + others, rules=rules)
    assert release.manifest.budget_left == pytest.approx(1.0)
    with pytest.raises(BudgetExceeded):
        _release(readings, households, ledger=live, rules=rules, source=_NoNoise())


def test_the_default_budget_allows_ten_releases_at_the_ceiling_in_thirty_days() -> None:
    """One release a day at ε = 1: the eleventh within 30 days is refused; 35 days after the
    first, the six oldest have expired (the sixth exactly 30 days old) and five are left."""
    readings, households = _fleet(2, 2, flat_wh(4))
    ledger: list[BudgetSpend] = []
    for day in range(10):
        at = AT + timedelta(days=day)
        ledger.append(_release(readings, households, ledger=ledger, at=at).spend)
    with pytest.raises(BudgetExceeded):
        _release(readings, households, ledger=ledger, at=AT + timedelta(days=10), source=_NoNoise())
    later = _release(readings, households, ledger=ledger, at=AT + timedelta(days=35))
    assert later.manifest.budget_left == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 0.0}, "ε must be in"),
        ({"epsilon": -1.0}, "ε must be in"),
        ({"epsilon": 1.5}, "ε must be in"),
        ({"epsilon": math.nan}, "ε must be in"),
        ({"delta": -1e-9}, "δ must be in"),
        ({"delta": 1e-3}, "δ must be in"),
        ({"interval_wh": None}, "missing: interval_wh"),
        ({"day_wh": None}, "missing: day_wh"),
        ({"day_wh": 0.0}, "day_wh must be"),
        ({"interval_wh": math.inf}, "interval_wh must be"),
        ({"mechanism": "gaussian_analytic"}, "needs δ > 0"),
        ({"mechanism": "exponential"}, "mechanism must be"),
        ({"at": datetime(2026, 11, 21)}, "timezone-aware"),
        ({"ledger": [BudgetSpend("ems", datetime(2026, 11, 20), 0.1, 0.0)]}, "timezone-aware"),
    ],
)
def test_bad_privacy_parameters_are_refused_before_any_noise(
    kwargs: dict[str, object], message: str
) -> None:
    readings, households = _fleet(2, 2, flat_wh(4))
    with pytest.raises(InvalidParameter, match=message):
        _release(readings, households, source=_NoNoise(), **kwargs)


def test_bad_data_is_refused_before_any_noise() -> None:
    readings, households = _fleet(2, 2, flat_wh(4))
    negative = readings.assign(energy_wh=-readings[ENERGY])
    with pytest.raises(InvalidData, match="negative"):
        _release(negative, households, source=_NoNoise())


def test_privacy_leak_warning_is_an_error() -> None:
    """diffprivlib's PrivacyLeakWarning never passes as a warning inside the library."""
    with pytest.raises(InvalidParameter, match="privacy leak"), leaks_refused():
        warnings.warn("bounds not specified", PrivacyLeakWarning, stacklevel=1)


def test_the_manifest_says_what_was_done() -> None:
    readings, households = _fleet(2, 2, flat_wh(4))
    release = _release(readings, households, epsilon=0.25, source=SeededUniforms(41))
    manifest = release.manifest
    assert (manifest.tier, manifest.mechanism, manifest.privacy_unit) == (
        "dp",
        LAPLACE,
        PRIVACY_UNIT,
    )
    assert (manifest.epsilon, manifest.delta, manifest.groups) == (0.25, 0.0, 2)
    assert manifest.bounds == {"day_wh": 25_000.0, "interval_wh": 2_000.0}
    assert manifest.budget_left == pytest.approx(9.75)
    assert manifest.rows_out == len(release.frame) == 2 * 96
    assert any("seeded" in note for note in manifest.notes)


def test_the_benchmark_runs_on_a_small_fleet() -> None:
    """bench/deidentify_dp.py end to end on 2 000 meters (the 1 M-meter figure is measured by
    ``python -m bench.deidentify_dp``, not in the suite)."""
    result = dp_aggregate_seconds(meters=2_000, groups=20, repeats=1)
    assert result["cells"] == 20 * 96
    assert result["mechanism"] == LAPLACE
    assert isinstance(result["seconds_median"], float)
