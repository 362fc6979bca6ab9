"""Generalisation for the generalised tier: coarser time with exact sums, coarser location, and
k-anonymity on the quasi-identifiers that really holds after enforcing it (X.1332 C3.3, C4.3)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidentify.errors import InvalidData, InvalidParameter, MissingColumns
from deidentify.generalise import (
    DEFAULT_K,
    SUPPRESSED,
    TARIFF_FAMILIES,
    Step,
    coarsen_location,
    coarsen_time,
    drop_fields,
    enforce_k_anonymity,
    k_anonymity,
)
from tests.deidentify.factories_ga import households, readings

# --- time -----------------------------------------------------------------------------------


FREQ = {"hour": "h", "day": "D"}


def naive_buckets(frame: pd.DataFrame, to: str) -> dict[tuple[str, pd.Timestamp], int]:
    """Per (meter, coarse start) sums, the slow obvious way."""
    out: dict[tuple[str, pd.Timestamp], int] = {}
    for meter, start, wh in frame[["meter_id", "start", "energy_wh"]].itertuples(index=False):
        utc = pd.Timestamp(start).tz_convert("UTC")
        floor = utc.replace(day=1).floor("D") if to == "month" else utc.floor(FREQ[to])
        out[(str(meter), floor)] = out.get((str(meter), floor), 0) + int(wh)
    return out


def as_buckets(frame: pd.DataFrame) -> dict[tuple[str, pd.Timestamp], int]:
    rows = frame[["meter_id", "start", "energy_wh"]].itertuples(index=False)
    return {(str(m), pd.Timestamp(s)): int(wh) for m, s, wh in rows}


@pytest.mark.parametrize("to", ["hour", "day", "month"])
def test_c3_3_coarsened_sums_are_exact_per_meter_and_interval(to: str) -> None:
    raw = readings(12, 192)  # 31 Jan and 1 Feb 2026: two days, two months
    out = coarsen_time(raw, to)  # type: ignore[arg-type]
    assert as_buckets(out) == naive_buckets(raw, to)
    per_meter = out.groupby("meter_id")["energy_wh"].sum()
    assert per_meter.equals(raw.groupby("meter_id")["energy_wh"].sum())
    assert list(out.columns) == ["meter_id", "start", "interval_s", "energy_wh", "covered_s"]
    assert out["energy_wh"].dtype == np.int64


def test_coarse_intervals_have_their_length_and_coverage() -> None:
    out = coarsen_time(readings(2, 192), "month")
    assert out["start"].dt.strftime("%Y-%m-%d").tolist() == ["2026-01-01", "2026-02-01"] * 2
    assert out["interval_s"].tolist() == [31 * 86400, 28 * 86400] * 2
    assert out["covered_s"].tolist() == [86400] * 4  # one day of each month is present
    hourly = coarsen_time(readings(2, 8), "hour")
    assert (hourly["interval_s"] == 3600).all() and (hourly["covered_s"] == 3600).all()


def test_months_are_utc_calendar_months() -> None:
    london = pd.DatetimeIndex(["2026-07-01 00:30", "2026-07-01 01:30"], tz="Europe/London")
    frame = pd.DataFrame(
        {"meter_id": ["m", "m"], "start": london, "interval_s": [1800, 1800], "energy_wh": [5, 7]}
    )  # 30 June 23:30 UTC, then 1 July 00:30 UTC
    leap = pd.DataFrame(
        {
            "meter_id": ["m"],
            "start": pd.DatetimeIndex(["2028-02-29 23:45"], tz="Europe/London"),
            "interval_s": [900],
            "energy_wh": [11],
        }
    )
    out = coarsen_time(pd.concat([frame, leap], ignore_index=True), "month")
    assert out["start"].dt.strftime("%Y-%m").tolist() == ["2026-06", "2026-07", "2028-02"]
    assert out["energy_wh"].tolist() == [5, 7, 11]
    assert out["interval_s"].tolist() == [30 * 86400, 31 * 86400, 29 * 86400]


def test_missing_intervals_show_in_covered_seconds() -> None:
    raw = readings(1, 96).drop(index=[3, 40, 41])
    out = coarsen_time(raw, "day")
    assert out["covered_s"].tolist() == [86400 - 3 * 900]
    assert out["energy_wh"].tolist() == [raw["energy_wh"].sum()]


def test_hours_then_days_equal_days() -> None:
    raw = readings(5, 192)
    assert coarsen_time(coarsen_time(raw, "hour"), "day").equals(coarsen_time(raw, "day"))


@st.composite
def random_readings(draw: st.DrawFn) -> pd.DataFrame:
    """Up to three meters with aligned, non-overlapping readings of mixed intervals."""
    rows = []
    for meter in range(draw(st.integers(0, 3))):
        t = draw(st.integers(0, 3 * 24)) * 3600
        for _ in range(draw(st.integers(0, 30))):
            interval = draw(st.sampled_from([300, 900, 1800, 3600]))
            t += (-t) % interval + draw(st.integers(0, 4)) * interval  # aligned, maybe a gap
            rows.append((f"m{meter}", t, interval, draw(st.integers(0, 10**6))))
            t += interval
    frame = pd.DataFrame(rows, columns=["meter_id", "t", "interval_s", "energy_wh"])
    base = pd.Timestamp("2026-02-27", tz="UTC")  # spans the end of February
    frame.insert(1, "start", base + pd.to_timedelta(frame.pop("t").astype(np.int64), unit="s"))
    return frame.astype({"interval_s": np.int64, "energy_wh": np.int64})


@settings(max_examples=50, deadline=None)
@given(random_readings(), st.sampled_from(["hour", "day", "month"]))
def test_c3_3_any_aligned_readings_sum_exactly(frame: pd.DataFrame, to: str) -> None:
    out = coarsen_time(frame, to)  # type: ignore[arg-type]
    assert as_buckets(out) == naive_buckets(frame, to)
    assert int(out["covered_s"].sum()) == int(frame["interval_s"].sum())
    assert (out["covered_s"] <= out["interval_s"]).all()


def test_fractional_energy_sums_to_the_exact_total() -> None:
    frame = readings(3, 96).astype({"energy_wh": float})
    frame["energy_wh"] += 0.1
    out = coarsen_time(frame, "day")
    exact = frame.groupby("meter_id")["energy_wh"].apply(math.fsum)
    assert out.set_index("meter_id")["energy_wh"].to_dict() == pytest.approx(exact.to_dict())


@pytest.mark.parametrize(
    ("change", "to", "error", "match"),
    [
        ({}, "week", InvalidParameter, "one of hour, day, month"),
        ({"interval_s": 86400}, "hour", InvalidParameter, "finer than the data"),
        ({"interval_s": 7}, "day", InvalidData, "divide a day"),
        ({"interval_s": 0}, "day", InvalidData, "divide a day"),
        ({"start": pd.Timestamp("2026-01-31 00:05", tz="UTC")}, "day", InvalidData, "boundary"),
        ({"energy_wh": -1}, "day", InvalidData, "negative"),
        ({"energy_wh": np.nan}, "day", InvalidData, "missing"),
        ({"meter_id": None}, "day", InvalidData, "no meter_id"),
        ({"start": pd.Timestamp("2026-01-31")}, "day", MissingColumns, "time-zone aware"),
        ({"interval_s": 900.0}, "day", MissingColumns, "whole seconds"),
    ],
)
def test_bad_readings_or_level_are_refused(
    change: dict[str, Any], to: str, error: type[Exception], match: str
) -> None:
    frame = readings(2, 8)
    for column, value in change.items():
        if column == "start" and value.tz is None:
            frame[column] = frame[column].dt.tz_localize(None)
        dtype = float if isinstance(value, float) else object if value is None else None
        frame[column] = frame[column].astype(dtype) if dtype else frame[column]
        frame.loc[frame.index[0], column] = value
    with pytest.raises(error, match=match):
        coarsen_time(frame, to)  # type: ignore[arg-type]


@pytest.mark.parametrize("drop", [[0], [0, 3]])
def test_overlapping_readings_are_refused(drop: list[int]) -> None:
    frame = readings(2, 8)
    frame = pd.concat([frame, frame.iloc[drop]])  # the same interval twice
    with pytest.raises(InvalidData, match="overlap"):
        coarsen_time(frame, "day")
    hourly = readings(1, 4, interval_s=3600)
    inside = readings(1, 1).assign(start=hourly["start"].iloc[0] + pd.Timedelta("15min"))
    with pytest.raises(InvalidData, match="overlap"):
        coarsen_time(pd.concat([hourly, inside]), "day")


def test_readings_without_a_column_are_refused() -> None:
    with pytest.raises(MissingColumns, match="energy_wh"):
        coarsen_time(readings(1, 4).drop(columns="energy_wh"), "day")


def test_empty_readings_give_empty_coarse_readings() -> None:
    out = coarsen_time(readings(2, 4).iloc[:0], "month")
    assert out.empty
    assert list(out.columns) == ["meter_id", "start", "interval_s", "energy_wh", "covered_s"]


# --- location and fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("postcode", "district", "area"),
    [
        ("SW1A 1AA", "SW1A", "SW"),
        ("sw1a1aa", "SW1A", "SW"),
        ("  EC1A   1BB ", "EC1A", "EC"),
        ("M1 1AE", "M1", "M"),
        ("B33 8TH", "B33", "B"),
        ("CR2 6XH", "CR2", "CR"),
        ("DN55 1PT", "DN55", "DN"),
        ("W1A 0AX", "W1A", "W"),
        ("AB11AA", "AB1", "AB"),  # without the space the inward code is the last three
        ("AB1", "AB1", "AB"),  # an outward code alone, as the simulator writes it
    ],
)
def test_postcode_is_cut_to_district_and_area(postcode: str, district: str, area: str) -> None:
    frame = pd.DataFrame({"meter_id": ["m"], "postcode": [postcode]})
    out = coarsen_location(frame)
    assert (out["postcode_district"].iloc[0], out["postcode_area"].iloc[0]) == (district, area)
    assert "postcode" not in out


def test_c3_3_full_postcode_and_feeder_leave_substation_stays() -> None:
    frame = households(40)
    out = coarsen_location(frame)
    assert "postcode" not in out and "feeder" not in out
    assert out["substation"].equals(frame["substation"])
    assert isinstance(out["postcode_area"].dtype, pd.CategoricalDtype)
    assert set(out.columns) == set(frame.columns) - {"postcode", "feeder"} | {
        "postcode_district",
        "postcode_area",
    }
    area = coarsen_location(frame, "area")
    assert "postcode_district" not in area
    assert coarsen_location(out, "area")["postcode_area"].equals(area["postcode_area"])


@pytest.mark.parametrize("bad", ["SW1A 1A", "12345", "SW1A-1AA", "", "Q"])
def test_malformed_postcode_is_refused_without_quoting_it(bad: str) -> None:
    frame = pd.DataFrame({"postcode": ["SW1A 1AA", bad, bad]})
    with pytest.raises(InvalidData, match="2 household") as caught:
        coarsen_location(frame)
    assert not bad or bad not in str(caught.value)


def test_missing_postcode_is_refused() -> None:
    with pytest.raises(InvalidData, match="no postcode"):
        coarsen_location(pd.DataFrame({"postcode": ["SW1A 1AA", None]}))
    with pytest.raises(MissingColumns, match="postcode"):
        coarsen_location(pd.DataFrame({"tariff": ["standard"]}))


def test_feeder_without_substation_is_refused() -> None:
    with pytest.raises(MissingColumns, match="substation"):
        coarsen_location(households(5).drop(columns="substation"))


def test_unknown_location_level_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="district or area"):
        coarsen_location(households(5), "street")  # type: ignore[arg-type]


def test_drop_fields_drops_what_is_there() -> None:
    frame = households(5)
    assert list(drop_fields(frame, ["name", "nickname"]).columns) == [
        c for c in frame.columns if c != "name"
    ]
    assert "address" not in drop_fields(frame, "address")  # one name, not its letters


# --- k-anonymity ----------------------------------------------------------------------------

QIS = ("postcode_area", "tariff", "has_pv", "has_ev")


def qi_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(QIS))


def test_report_measures_the_classes() -> None:
    frame = qi_frame(
        [("AB", "standard", True, False)] * 3
        + [("AB", "standard", False, False)]
        + [("CD", None, False, False)] * 2  # a missing value is a value of its own
    )
    report = k_anonymity(frame, k=2)
    assert (report.rows, report.classes, report.smallest_class) == (6, 3, 1)
    assert (report.classes_below_k, report.rows_below_k, report.holds) == (1, 1, False)
    assert k_anonymity(frame, k=3).rows_below_k == 3
    assert k_anonymity(frame).k == DEFAULT_K == 15


@st.composite
def qi_frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 60))
    values = {
        "postcode_district": st.sampled_from(["AB1", "AB2", "CD1", "EF10", None]),
        "tariff": st.sampled_from([*TARIFF_FAMILIES, "prepay", None]),
        "has_pv": st.booleans(),
        "has_ev": st.booleans(),
    }
    frame = pd.DataFrame({c: draw(st.lists(s, min_size=n, max_size=n)) for c, s in values.items()})
    frame["postcode_area"] = [
        d.rstrip("0123456789") if isinstance(d, str) else None for d in frame["postcode_district"]
    ]
    frame["reading"] = np.arange(n)  # not a quasi-identifier: must come through untouched
    frame.index = pd.Index(np.arange(n) * 7 + 3)
    return frame


@settings(max_examples=40, deadline=None)
@given(qi_frames(), st.integers(2, 6))
def test_report_agrees_with_a_plain_group_count(frame: pd.DataFrame, k: int) -> None:
    qis = ["postcode_district", "postcode_area", "tariff", "has_pv", "has_ev"]
    sizes = frame.groupby(qis, dropna=False).size()
    report = k_anonymity(frame, qis, k)
    assert report.classes == len(sizes)
    assert report.smallest_class == (int(sizes.min()) if len(sizes) else None)
    assert report.rows_below_k == int(sizes[sizes < k].sum())
    assert report.classes_below_k == int((sizes < k).sum())


def ancestors(column: str, value: Any) -> list[Any]:
    """What the default hierarchy may turn ``value`` of ``column`` into (itself included)."""
    if column == "tariff":
        family = TARIFF_FAMILIES.get(value, SUPPRESSED) if isinstance(value, str) else SUPPRESSED
        return [value, family, SUPPRESSED]
    if column == "postcode_district" and isinstance(value, str):
        return [value, value.rstrip("0123456789"), SUPPRESSED]
    return [value, SUPPRESSED]


def same(a: Any, b: Any) -> bool:
    return bool(pd.isna(a) and pd.isna(b)) if pd.isna(a) or pd.isna(b) else bool(a == b)


@settings(max_examples=50, deadline=None)
@given(qi_frames(), st.integers(2, 8), st.booleans())
def test_c3_3_enforced_frame_is_k_anonymous_and_invents_nothing(
    frame: pd.DataFrame, k: int, with_district: bool
) -> None:
    qis = ["postcode_district", "tariff", "has_pv", "has_ev"] if with_district else list(QIS)
    frame = frame.drop(columns="postcode_area" if with_district else "postcode_district")
    out, report = enforce_k_anonymity(frame, qis, k)
    sizes = out.groupby(qis, dropna=False).size()
    assert out.empty or sizes.min() >= k
    assert report.holds and report.rows == len(out)
    assert report.suppressed == len(frame) - len(out) < k  # all end at *: one class at most
    assert set(out.index) <= set(frame.index)
    assert out["reading"].equals(frame.loc[out.index, "reading"])
    for column in qis:
        for before, after in zip(frame.loc[out.index, column], out[column], strict=True):
            assert any(same(after, a) for a in ancestors(column, before)), (column, before, after)


def test_rows_in_large_classes_keep_their_detail() -> None:
    common = [("AB", "standard", False, False)] * 20
    rare = [("AB", "economy7", True, True), ("AB", "ev-night", True, True)] * 8
    out, report = enforce_k_anonymity(qi_frame(common + rare), QIS, k=15)
    assert out.iloc[:20].values.tolist() == qi_frame(common).values.tolist()
    assert out.iloc[20:].values.tolist() == [["AB", "multi-rate", SUPPRESSED, SUPPRESSED]] * 16
    assert report.steps == (
        ("has_ev -> *", 16),
        ("has_pv -> *", 16),
        ("tariff -> tariff family", 16),
    )
    assert (report.smallest_class, report.suppressed) == (16, 0)


def test_rows_no_step_can_cover_are_suppressed_and_counted() -> None:
    frame = qi_frame([("AB", "standard", False, False)] * 15 + [("CD", "standard", True, True)])
    out, report = enforce_k_anonymity(frame, QIS, k=15)
    assert len(out) == 15 and report.suppressed == 1 and report.smallest_class == 15
    assert report.steps[-1] == ("postcode area -> *", 1)
    empty, none_left = enforce_k_anonymity(frame.iloc[:3], QIS, k=15)
    assert empty.empty and none_left.suppressed == 3 and none_left.smallest_class is None


def test_c3_3_simulated_fleet_reaches_k_15() -> None:
    frame = coarsen_location(households(1500), "district").drop(columns="substation")
    qis = ["postcode_district", "tariff", "has_pv", "has_ev"]
    before = k_anonymity(frame.drop(columns="postcode_area"), qis)
    assert not before.holds  # the fleet has rare combinations (EV and PV on economy 7...)
    out, report = enforce_k_anonymity(frame.drop(columns="postcode_area"), qis)
    assert report.holds and report.smallest_class is not None and report.smallest_class >= 15
    assert report.suppressed < len(frame) * 0.05 and len(out) + report.suppressed == len(frame)
    assert k_anonymity(out, qis).holds


def test_a_declared_hierarchy_is_followed() -> None:
    bands = ["30-39"] * 3 + ["40-44"] * 2 + ["45-49"]
    frame = pd.DataFrame({"age_band": bands, "x": range(6)})
    decade = Step("age_band", "age band -> decade", lambda v: f"{v[0]}0s")
    out, report = enforce_k_anonymity(frame, ["age_band"], k=3, hierarchy=[decade])
    assert out["age_band"].tolist() == ["30-39"] * 3 + ["40s"] * 3
    assert report.steps == (("age band -> decade", 3),) and report.suppressed == 0
    assert out["x"].tolist() == list(range(6))


@pytest.mark.parametrize("k", [1, 0, -15, True, 2.5])
def test_k_below_2_is_refused(k: Any) -> None:
    frame = qi_frame([("AB", "standard", False, False)] * 3)
    with pytest.raises(InvalidParameter, match="k must be"):
        k_anonymity(frame, QIS, k)
    with pytest.raises(InvalidParameter, match="k must be"):
        enforce_k_anonymity(frame, QIS, k)


@pytest.mark.parametrize("qis", [(), ("tariff", "tariff")])
def test_no_or_repeated_quasi_identifiers_are_refused(qis: tuple[str, ...]) -> None:
    with pytest.raises(InvalidParameter, match="quasi-identifiers"):
        k_anonymity(qi_frame([("AB", "standard", False, False)]), qis)


def test_missing_quasi_identifier_is_refused() -> None:
    with pytest.raises(MissingColumns, match="postcode_area"):
        enforce_k_anonymity(households(5))


@pytest.mark.parametrize("column", ["postcode", "postcode_district", "feeder", "substation"])
def test_location_outside_the_quasi_identifiers_is_refused(column: str) -> None:
    frame = qi_frame([("AB", "standard", False, False)] * 3).assign(**{column: "x"})
    with pytest.raises(InvalidData, match=column):
        k_anonymity(frame, QIS, 2)
    with pytest.raises(InvalidData, match=column):
        enforce_k_anonymity(frame, QIS, 2)


def test_empty_frame_is_k_anonymous() -> None:
    report = k_anonymity(qi_frame([]))
    assert (report.rows, report.classes, report.smallest_class, report.holds) == (0, 0, None, True)
    out, enforced = enforce_k_anonymity(qi_frame([]))
    assert out.empty and enforced.suppressed == 0 and enforced.steps == ()
