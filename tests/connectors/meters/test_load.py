"""The household load model: reproducible, chunk-independent, fast, and plausible."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from connectors.meters import load
from connectors.meters.households import Households
from connectors.meters.load import DAY_S, LoadModel
from tests.connectors.meters.helpers import MONDAY, SEED, day_s

WINTER_WEEK = [dt.date(2025, 1, 13) + dt.timedelta(days=i) for i in range(7)]
SUMMER_WEEK = [dt.date(2025, 7, 14) + dt.timedelta(days=i) for i in range(7)]


@pytest.fixture(scope="module")
def model() -> LoadModel:
    return LoadModel(SEED)


@pytest.fixture(scope="module")
def monday(model: LoadModel) -> np.ndarray:
    """Wh per quarter hour of 2,000 households on a Monday in March."""
    return model.energy_wh(model.households(range(2000)), day_s(MONDAY), 96)


def hourly_mean_w(wh: np.ndarray) -> np.ndarray:
    """Fleet-mean W for each hour of a day of quarter-hour Wh."""
    return np.asarray(wh.mean(axis=0).reshape(24, 4).mean(axis=1) * 4, dtype=np.float64)


def test_same_seed_and_range_give_the_same_array() -> None:
    a, b = LoadModel(7), LoadModel(7)
    first = a.energy_wh(a.households(range(300)), day_s(MONDAY), 96)
    assert np.array_equal(first, b.energy_wh(b.households(range(300)), day_s(MONDAY), 96))
    other = LoadModel(8)
    assert not np.array_equal(
        first, other.energy_wh(other.households(range(300)), day_s(MONDAY), 96)
    )


def test_a_households_load_does_not_depend_on_the_other_households(
    model: LoadModel, monday: np.ndarray
) -> None:
    picked = np.array([1999, 3, 1024, 777], dtype=np.int64)
    alone = model.energy_wh(model.households(picked), day_s(MONDAY), 96)
    assert np.array_equal(alone, monday[picked])


def test_internal_blocks_do_not_change_the_values(
    model: LoadModel, monday: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "_BLOCK", 37)
    assert np.array_equal(
        model.energy_wh(model.households(range(200)), day_s(MONDAY), 96), monday[:200]
    )


def test_chunking_the_time_range_does_not_change_the_values(model: LoadModel) -> None:
    households = model.households(range(40))
    start = day_s(MONDAY) + 5 * 3600
    whole = model.energy_wh(households, start, 3 * 96)
    splits = [0, 7, 100, 181, 3 * 96]
    parts = [
        model.energy_wh(households, start + lo * 900, hi - lo)
        for lo, hi in itertools.pairwise(splits)
    ]
    assert np.array_equal(np.concatenate(parts, axis=1), whole)


def test_coarser_intervals_are_the_sums_of_finer_ones(model: LoadModel) -> None:
    households = model.households(range(50))
    fine = model.energy_wh(households, day_s(MONDAY), 288, 300).astype(np.int64)
    hourly = model.energy_wh(households, day_s(MONDAY), 24, 3600).astype(np.int64)
    # each value is rounded once, from the same 5-minute energies
    assert np.abs(fine.reshape(50, 24, 12).sum(axis=2) - hourly).max() <= 6
    assert hourly.sum() > 0


@pytest.mark.parametrize("interval_s", [300, 900, 1800, 3600])
def test_every_supported_interval_covers_the_day(model: LoadModel, interval_s: int) -> None:
    wh = model.energy_wh(model.households(range(3)), day_s(MONDAY), DAY_S // interval_s, interval_s)
    assert wh.shape == (3, DAY_S // interval_s)
    assert wh.dtype == np.uint32


@pytest.mark.parametrize(
    ("start_s", "count", "interval_s"), [(0, 4, 600), (450, 4, 900), (0, 0, 900)]
)
def test_unsupported_ranges_are_refused(
    model: LoadModel, start_s: int, count: int, interval_s: int
) -> None:
    with pytest.raises(ValueError, match=r"interval|boundary|at least"):
        model.energy_wh(model.households(range(2)), start_s, count, interval_s)


def test_daily_totals_are_those_of_households(model: LoadModel, monday: np.ndarray) -> None:
    kwh = monday.sum(axis=1) / 1000
    households = model.households(range(2000))
    plain = ~households.has_ev & ~households.has_pv
    assert 6.0 <= np.median(kwh[plain]) <= 15.0
    assert np.percentile(kwh, 1) >= 0.5 and np.percentile(kwh, 99) <= 60.0
    assert kwh[households.has_ev].mean() > kwh[~households.has_ev].mean() + 3.0
    peak_kw = monday.max(axis=1) * 4 / 1000
    assert 1.0 <= np.median(peak_kw) <= 5.0
    assert np.percentile(peak_kw, 99) <= 12.0


def test_evening_peak_exceeds_the_night_trough(monday: np.ndarray) -> None:
    hourly = hourly_mean_w(monday)
    assert hourly[18:21].mean() > 2.5 * hourly[3:5].mean()
    assert hourly.argmax() in range(17, 22)


def test_households_out_at_work_use_more_by_day_at_the_weekend(model: LoadModel) -> None:
    households = model.households(range(1500))
    away = households[np.flatnonzero(households.away_weekdays & ~households.has_pv)]
    weekday = model.energy_wh(away, day_s(dt.date(2025, 3, 5)), 96)
    saturday = model.energy_wh(away, day_s(dt.date(2025, 3, 8)), 96)
    assert hourly_mean_w(saturday)[10:16].mean() > 1.5 * hourly_mean_w(weekday)[10:16].mean()


def week_wh(model: LoadModel, households: Households, week: list[dt.date]) -> np.ndarray:
    return model.energy_wh(households, day_s(week[0]), 96 * len(week)).reshape(
        len(households), -1, 96
    )


def test_winter_days_use_more_than_summer_days(model: LoadModel) -> None:
    households = model.households(range(500))
    plain = households[np.flatnonzero(~households.has_pv)]
    assert (
        week_wh(model, plain, WINTER_WEEK).sum() > 1.15 * week_wh(model, plain, SUMMER_WEEK).sum()
    )


def test_pv_households_import_less_at_noon_in_summer_than_in_winter(model: LoadModel) -> None:
    households = model.households(range(1500))
    pv = households[np.flatnonzero(households.has_pv)]
    noon = slice(11 * 4, 13 * 4)
    summer = week_wh(model, pv, SUMMER_WEEK)[:, :, noon].mean()
    winter = week_wh(model, pv, WINTER_WEEK)[:, :, noon].mean()
    assert summer < 0.6 * winter
    no_pv = households[np.flatnonzero(~households.has_pv)][: len(pv)]
    assert summer < 0.6 * week_wh(model, no_pv, SUMMER_WEEK)[:, :, noon].mean()


def test_pv_never_makes_the_import_negative(model: LoadModel) -> None:
    households = model.households(range(1500))
    pv = households[np.flatnonzero(households.has_pv)]
    summer = week_wh(model, pv, SUMMER_WEEK)
    # import is clipped at zero: a sunny noon shows zero-import intervals, never a wrap-around
    assert (summer[:, :, 11 * 4 : 13 * 4] == 0).mean() > 0.2
    assert summer.max() < 20_000


def test_ev_charging_runs_in_the_evening_and_at_night(model: LoadModel) -> None:
    households = model.households(range(2000))
    ev = households[np.flatnonzero(households.has_ev)]
    no_ev = households[np.flatnonzero(~households.has_ev)][: len(ev)]
    days = [dt.date(2025, 3, 3) + dt.timedelta(days=i) for i in range(5)]
    extra = hourly_mean_w(week_wh(model, ev, days).reshape(-1, 96))
    extra -= hourly_mean_w(week_wh(model, no_ev, days).reshape(-1, 96))
    night_and_evening = np.r_[extra[0:6], extra[18:24]]
    assert night_and_evening.mean() > 4 * max(extra[9:16].mean(), 1.0)


def test_ten_thousand_households_draw_a_whole_day_in_one_call(model: LoadModel) -> None:
    """One vectorised call for the whole population (how fast: ``bench.load_model``)."""
    wh = model.energy_wh(model.households(range(10_000)), day_s(MONDAY), 96)
    assert wh.shape == (10_000, 96) and np.isfinite(wh).all() and (wh >= 0).all()


def test_households_are_drawn_per_number(model: LoadModel) -> None:
    many = model.households(range(5000))
    some = model.households([4321, 17])
    assert some.occupants.tolist() == many.occupants[[4321, 17]].tolist()
    assert some.pv_kwp.tolist() == many.pv_kwp[[4321, 17]].tolist()
    assert 0.1 < many.has_pv.mean() < 0.3
    assert 0.08 < many.has_ev.mean() < 0.22
    assert set(np.unique(many.occupants).tolist()) == {1, 2, 3, 4, 5}
