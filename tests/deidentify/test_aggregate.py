"""The aggregated tier (X.1332 C4.3, R4.4, C3.3): the N and dominance rules in every released
interval, merging into the parent group, suppression marked, differencing refused, bad input
refused with nothing released."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidentify.aggregate import (
    AGGREGATE_COLUMNS,
    MERGED,
    RELEASED,
    WITHHELD,
    Aggregated,
    MemberSet,
    PastRelease,
    aggregate,
    check_differencing,
)
from deidentify.errors import (
    DeidentifyError,
    DifferencingRefused,
    InvalidData,
    InvalidParameter,
    MissingColumns,
)
from deidentify.frames import ENERGY, FEEDER, METER, START, SUBSTATION
from tests.deidentify.fleet_ad import (
    DAY,
    flat_wh,
    fleet_wh,
    households_frame,
    meter_ids,
    readings_frame,
)

RULES_15 = {"residential": False, "min_members": 15, "max_share": 0.15}


def _release(
    groups: dict[str, list[str]], parents: dict[str, str], wh: np.ndarray, **kw: object
) -> Aggregated:
    meters = [m for ms in groups.values() for m in ms]
    readings = readings_frame(meters, wh)
    return aggregate(readings, households_frame(groups, parents), **kw)  # type: ignore[arg-type]


def _rows(result: Aggregated, group: str) -> pd.DataFrame:
    return result.frame[result.frame["group"] == group].reset_index(drop=True)


def test_c4_3_a_group_balanced_over_the_day_is_withheld_in_the_intervals_one_home_dominates() -> (
    None
):
    """20 simulated homes, none above 5.2 % of the day's total, yet a kettle or an EV puts one
    above 15 % of some quarter-hours: those cells, and only those, are withheld."""
    wh = fleet_wh(200)
    pick = np.argsort(wh.sum(axis=1))[60:80]
    homes = wh[pick]
    assert (homes.sum(axis=1) / homes.sum()).max() < 0.06
    dominated = homes.max(axis=0) > 0.15 * homes.sum(axis=0)
    assert 0 < dominated.sum() < 96

    result = _release({"F1": meter_ids(20)}, {"F1": "S1"}, homes, **RULES_15)

    rows = _rows(result, "F1")
    assert list(rows["status"] == WITHHELD) == list(dominated)
    assert rows.loc[dominated, ENERGY].isna().all()
    assert set(rows.loc[dominated, "reason"]) == {"a member above 15%"}
    np.testing.assert_array_equal(rows.loc[~dominated, ENERGY], homes.sum(axis=0)[~dominated])


def test_c4_3_member_count_is_checked_in_every_interval() -> None:
    """16 meters pass N >= 15; where two of them miss a reading, only N = 14 and the cell fails."""
    meters = meter_ids(16)
    readings = readings_frame(meters, flat_wh(16))
    gap = (readings[METER].isin(meters[:2])) & (readings[START] == DAY + pd.Timedelta(hours=3))
    households = households_frame({"F1": meters}, {"F1": "S1"})

    result = aggregate(readings[~gap], households, parent=None, **RULES_15)  # type: ignore[arg-type]

    rows = _rows(result, "F1")
    failed = rows[rows["status"] != RELEASED]
    assert list(failed[START]) == [DAY + pd.Timedelta(hours=3)]
    assert failed["members"].tolist() == [14]
    assert failed["reason"].tolist() == ["fewer than 15 members"]
    assert (rows.loc[rows["status"] == RELEASED, "members"] == 16).all()


def test_c4_3_residential_interval_aggregates_need_100_members_by_default() -> None:
    """CPUC D.14-05-016: with the defaults, 99 homes are withheld, 100 released."""
    small = _release({"F1": meter_ids(99)}, {"F1": "S1"}, flat_wh(99), parent=None)
    large = _release({"F1": meter_ids(100)}, {"F1": "S1"}, flat_wh(100), parent=None)
    assert set(small.frame["status"]) == {WITHHELD}
    assert set(small.frame["reason"]) == {"fewer than 100 members"}
    assert set(large.frame["status"]) == {RELEASED}
    assert large.manifest.min_group_size == 100


def test_c4_3_failing_feeders_merge_into_their_substation_and_are_rechecked() -> None:
    """F1 and F2 (10 homes each) fail N >= 15 and are summed into S1 (20 homes), which passes;
    F3 passes alone and is never part of a merged cell."""
    groups = {"F1": meter_ids(10), "F2": meter_ids(10, 10), "F3": meter_ids(20, 20)}
    parents = {"F1": "S1", "F2": "S1", "F3": "S1"}
    wh = flat_wh(40).round()
    result = _release(groups, parents, wh, **RULES_15)

    for feeder in ("F1", "F2"):
        rows = _rows(result, feeder)
        assert set(rows["status"]) == {MERGED}
        assert set(rows["merged_into"]) == {"S1"}
        assert rows[ENERGY].isna().all()
    assert set(_rows(result, "F3")["status"]) == {RELEASED}
    merged = _rows(result, "S1")
    assert set(merged["level"]) == {SUBSTATION}
    assert (merged["members"] == 20).all()
    np.testing.assert_array_equal(merged[ENERGY], wh[:20].sum(axis=0))
    assert result.manifest.merged == 2 * 96
    assert result.manifest.suppressed == 0
    assert result.manifest.min_group_size == 20


def test_c4_3_a_cell_still_failing_in_its_parent_is_suppressed_and_marked() -> None:
    """F1 (10 homes) is the only failing feeder of S1: merged alone it fails again and is
    withheld as "threshold not met"; without a parent column it is withheld directly."""
    groups = {"F1": meter_ids(10), "F2": meter_ids(20, 10)}
    parents = {"F1": "S1", "F2": "S1"}
    for parent in (SUBSTATION, None):
        result = _release(groups, parents, flat_wh(30), parent=parent, **RULES_15)
        rows = _rows(result, "F1")
        assert set(rows["status"]) == {WITHHELD}
        assert rows[ENERGY].isna().all()
        assert set(rows["reason"]) == {"fewer than 15 members"}
        assert rows["merged_into"].isna().all()
        assert not (result.frame["group"] == "S1").any()
        assert result.manifest.suppressed == 96
        assert result.manifest.merged == 0
        assert result.manifest.groups == 2


def test_coarser_interval_sums_each_member_before_the_rules() -> None:
    """Hourly release of quarter-hour readings: one member's four readings add up first."""
    meters = meter_ids(15)
    wh = flat_wh(15).round()
    result = _release({"F1": meters}, {"F1": "S1"}, wh, interval="1h", **RULES_15)
    assert list(result.frame["interval_s"].unique()) == [3600]
    assert result.frame[START].tolist()[:2] == [DAY, DAY + pd.Timedelta(hours=1)]
    hourly = wh.reshape(15, -1, 4).sum(axis=2).sum(axis=0)
    np.testing.assert_array_equal(result.frame[ENERGY].to_numpy(dtype=float), hourly)
    assert list(result.frame.columns) == list(AGGREGATE_COLUMNS)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("categorical", [False, True])
def test_time_units_and_categorical_meters_give_the_same_release(
    unit: str, categorical: bool
) -> None:
    """pandas 3 parses times to µs or s as often as ns, and a large caller passes meter ids as a
    category: the release is the same."""
    groups = {"F1": meter_ids(10), "F2": meter_ids(20, 10)}
    wh = flat_wh(30).round()
    readings = readings_frame(groups["F1"] + groups["F2"], wh)
    households = households_frame(groups, {"F1": "S1", "F2": "S1"})
    expected = aggregate(readings, households, **RULES_15)  # type: ignore[arg-type]
    readings[START] = readings[START].dt.as_unit(unit)
    if categorical:
        readings[METER] = readings[METER].astype("category")
    got = aggregate(readings, households, **RULES_15)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(got.frame, expected.frame)
    assert got.members == expected.members


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    seed=st.integers(0, 2**32 - 1),
    spike=st.floats(1.0, 50.0),
)
def test_c4_3_no_released_cell_breaks_the_rules_whatever_the_data(
    sizes: list[int], seed: int, spike: float
) -> None:
    """Every released cell, feeder or merged substation, holds >= 15 members and none above
    15 % of its total, recomputed here from the readings with pandas; every feeder cell of the
    day is in the frame once."""
    rng = np.random.default_rng(seed)
    groups = {f"F{i}": meter_ids(n, 100 * i) for i, n in enumerate(sizes)}
    total = sum(sizes)
    wh = rng.gamma(2.0, 50.0, (total, 96)) * np.where(rng.random((total, 96)) < 0.05, spike, 1.0)
    result = _release(groups, {f: f"S{i % 2}" for i, f in enumerate(groups)}, wh, **RULES_15)

    frame = result.frame
    cells = _recomputed(groups, wh)
    released = frame[frame["status"] == RELEASED]
    own = released[released["level"] == FEEDER].join(cells, on=["group", START])
    children = frame[frame["status"] == MERGED].join(cells, on=["group", START])
    merged = children.groupby(["merged_into", START]).agg(
        n=("n", "sum"), sum=("sum", "sum"), max=("max", "max")
    )
    parents = released[released["level"] == SUBSTATION].join(merged, on=["group", START])
    for part in (own, parents):
        assert (part["n"] == part["members"]).all()
        assert (part["n"] >= 15).all()
        assert (part["max"] <= 0.15 * part["sum"]).all()
        np.testing.assert_allclose(part[ENERGY].to_numpy(dtype=float), part["sum"])
    assert (
        len(frame[frame["level"] == FEEDER].drop_duplicates(["group", START])) == len(groups) * 96
    )


def _recomputed(groups: dict[str, list[str]], wh: np.ndarray) -> pd.DataFrame:
    """Members, total and largest member per feeder and interval, by pandas groupby."""
    readings = readings_frame([m for ms in groups.values() for m in ms], wh)
    feeder = {m: f for f, ms in groups.items() for m in ms}
    readings["group"] = readings[METER].map(feeder)
    cells = readings.groupby(["group", START])[ENERGY].agg(["size", "sum", "max"])
    return cells.rename(columns={"size": "n"})


# Differencing (R4.4): the attack, and the check that refuses it.


def _two_releases() -> tuple[Aggregated, Aggregated, np.ndarray]:
    meters = meter_ids(16)
    wh = np.random.default_rng(3).integers(100, 121, (16, 96)).astype(np.float64)
    first = _release({"F1": meters}, {"F1": "S1"}, wh, parent=None, **RULES_15)
    second = _release({"F1": meters[1:]}, {"F1": "S1"}, wh[1:], parent=None, **RULES_15)
    return first, second, wh


def test_r4_4_two_overlapping_releases_passing_15_15_give_back_a_household_exactly() -> None:
    """The attack: the same feeder with and without one home, both passing every rule in every
    interval; their difference is that home's whole load profile."""
    first, second, wh = _two_releases()
    assert set(first.frame["status"]) == set(second.frame["status"]) == {RELEASED}
    difference = first.frame[ENERGY].to_numpy() - second.frame[ENERGY].to_numpy()
    np.testing.assert_array_equal(difference, wh[0])


def test_r4_4_the_differencing_check_refuses_the_second_release() -> None:
    first, second, _ = _two_releases()
    history = [PastRelease("rel-1", "acme-energy", first.members)]
    with pytest.raises(DifferencingRefused, match="differs by 1 member"):
        check_differencing(second.members, history, "acme-energy")


def test_r4_4_identical_distant_or_other_recipients_member_sets_are_allowed() -> None:
    """Nothing new is revealed by the same set again, by a set 15 members away, by a release
    to someone else, or by a period that does not overlap."""
    meters = meter_ids(130)
    wh = flat_wh(130)
    base = _release({"F1": meters[:115]}, {"F1": "S1"}, wh[:115], parent=None)
    far = _release({"F1": meters[15:]}, {"F1": "S1"}, wh[15:], parent=None)
    near = _release({"F1": meters[1:116]}, {"F1": "S1"}, wh[1:116], parent=None)
    history = [PastRelease("rel-1", "acme-energy", base.members)]
    check_differencing(base.members, history, "acme-energy")
    check_differencing(far.members, history, "acme-energy")
    check_differencing(near.members, history, "other-recipient")
    later = [
        s.__class__(s.group, s.end, s.end + pd.Timedelta(days=1), s.members) for s in near.members
    ]
    check_differencing(later, history, "acme-energy")
    with pytest.raises(DifferencingRefused, match="differs by 2 member"):
        check_differencing(near.members, history, "acme-energy")


def test_r4_4_renaming_the_group_does_not_evade_the_check() -> None:
    first, second, _ = _two_releases()
    renamed = [s.__class__("S9", s.start, s.end, s.members) for s in second.members]
    with pytest.raises(DifferencingRefused):
        check_differencing(
            renamed, [PastRelease("rel-1", "acme-energy", first.members)], "acme-energy"
        )


@settings(max_examples=200, deadline=None)
@given(
    bases=st.lists(st.frozensets(st.integers(0, 60), max_size=40), min_size=1, max_size=3),
    flips=st.lists(st.frozensets(st.integers(0, 60), max_size=20), min_size=1, max_size=3),
)
def test_r4_4_the_check_refuses_exactly_the_overlapping_sets_1_to_14_apart(
    bases: list[frozenset[int]], flips: list[frozenset[int]]
) -> None:
    """Against a brute-force comparison of every pair: earlier sets are the current ones with
    0 to 20 members flipped in or out."""
    current = [_member_set(f"F{i}", base) for i, base in enumerate(bases)]
    earlier = [_member_set("S", bases[i % len(bases)] ^ flip) for i, flip in enumerate(flips)]
    held = {b.members for b in earlier}  # same period: a set already held is not news
    close = any(
        a.members & b.members and 0 < len(a.members ^ b.members) < 15
        for a in current
        if a.members not in held
        for b in earlier
    )
    try:
        check_differencing(
            current, [PastRelease("rel-1", "acme-energy", tuple(earlier))], "acme-energy"
        )
    except DifferencingRefused:
        assert close
    else:
        assert not close


def _member_set(group: str, numbers: frozenset[int]) -> MemberSet:
    return MemberSet(group, DAY, DAY + pd.Timedelta(days=1), frozenset(f"M{n}" for n in numbers))


# Bad input: a clear error and nothing released.


def _good() -> tuple[pd.DataFrame, pd.DataFrame]:
    meters = meter_ids(20)
    return readings_frame(meters, flat_wh(20)), households_frame({"F1": meters}, {"F1": "S1"})


def _empty_group(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r, h.assign(feeder=["F1"] * 19 + [""])


def _missing_group(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r, h.assign(feeder=pd.Series(["F1"] * 19 + [None], index=h.index, dtype=object))


def _no_readings(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r.iloc[:0], h


def _negative(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r.assign(energy_wh=r[ENERGY].where(r.index != 5, -1.0)), h


def _no_energy(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r.drop(columns=[ENERGY]), h


def _no_feeder(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r, h.drop(columns=[FEEDER])


def _stranger(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r, h.iloc[1:]


def _two_parents(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r, h.assign(substation=["S1"] * 19 + ["S2"])


def _twice(r: pd.DataFrame, h: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return r, pd.concat([h, h.iloc[:1]])


Spoil = Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]


@pytest.mark.parametrize(
    ("spoil", "error", "message"),
    [
        (_empty_group, InvalidData, "empty feeder"),
        (_missing_group, InvalidData, "empty feeder"),
        (_no_readings, InvalidData, "no readings"),
        (_negative, InvalidData, "negative"),
        (_no_energy, MissingColumns, "energy_wh"),
        (_no_feeder, MissingColumns, "feeder"),
        (_stranger, InvalidData, "meters"),
        (_two_parents, InvalidData, "two substations"),
        (_twice, InvalidData, "twice"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_released(
    spoil: Spoil, error: type[DeidentifyError], message: str
) -> None:
    readings, households = spoil(*_good())
    with pytest.raises(error, match=message):
        aggregate(readings, households, **RULES_15)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"group_by": "district"}, MissingColumns, "district"),
        ({"parent": "region"}, MissingColumns, "region"),
        ({"max_share": 0.0}, InvalidParameter, "max_share"),
        ({"min_members": 1, "residential": False}, InvalidParameter, "at least 2"),
        ({"interval": 600}, InvalidParameter, "multiple of"),
        ({"interval": "20min"}, InvalidParameter, "multiple of"),
        ({"interval": "7min"}, InvalidParameter, "dividing a day"),
        ({"interval": "fortnightly"}, InvalidParameter, "not a duration"),
        ({"interval": 7 * 86_400}, InvalidParameter, "dividing a day"),
    ],
)
def test_bad_parameters_are_refused(
    kwargs: dict[str, object], error: type[DeidentifyError], message: str
) -> None:
    readings, households = _good()
    with pytest.raises(error, match=message):
        aggregate(readings, households, **kwargs)  # type: ignore[arg-type]


def test_r4_4_a_release_repeated_with_sets_a_few_apart_is_allowed_and_a_new_one_is_not() -> None:
    """A feeder and the substation it was merged into differ by a few members but are never
    released in the same interval; repeating that release adds nothing the recipient lacks.
    A set the recipient has not seen, a few members from one it has, is still refused."""
    feeder = _member_set("F1", frozenset(range(110)))
    substation = _member_set("S1", frozenset(range(120)))
    history = [PastRelease("rel-1", "acme-energy", (feeder, substation))]
    check_differencing((feeder, substation), history, "acme-energy")
    smaller = _member_set("F1", frozenset(range(109)))
    with pytest.raises(DifferencingRefused, match="differs by 1 member"):
        check_differencing((smaller,), history, "acme-energy")
    longer = feeder.__class__(feeder.group, feeder.start, feeder.end + pd.Timedelta(days=1),
                              feeder.members)  # fmt: skip
    with pytest.raises(DifferencingRefused):  # a period the recipient does not hold yet
        check_differencing((longer,), history, "acme-energy")
