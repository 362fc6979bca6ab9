"""Each tier releases what ARCHITECTURE §3.4 promises (X.1332 C3.3, C4.3, R3.5).

The linkage test is the point: on pseudonymised profiles a nearest-neighbour attacker links
most households between two weeks; on the generalised tier no better than 1/k.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from broker.assurance.population import Population, population
from deidentify.aggregate import PastRelease
from deidentify.errors import (
    BudgetExceeded,
    DifferencingRefused,
    InvalidData,
    InvalidParameter,
    MissingColumns,
    UnknownTier,
)
from deidentify.frames import ENERGY, METER, START
from deidentify.linkage import distribution_features, nearest_neighbour_linkage
from deidentify.pseudonym import PseudonymKey
from deidentify.tiers import MEMBERS, TierParams, transform

DAY0 = 20_400  # days since 1970-01-01: 2025-11-08


@pytest.fixture(scope="module")
def pop() -> Population:
    return population(1_200, seed=7)


@pytest.fixture(scope="module")
def fortnight(pop: Population) -> pd.DataFrame:
    return pop.readings(DAY0, 14)


def key(domain: str = "acme-energy") -> PseudonymKey:
    return PseudonymKey(domain, bytes(range(32)))


def test_unknown_tier_and_granularity_are_refused(fortnight: pd.DataFrame) -> None:
    with pytest.raises(UnknownTier, match="unknown tier 'clear'"):
        transform("clear", fortnight, None, TierParams())
    with pytest.raises(InvalidParameter, match="unknown granularity 'weekly'"):
        transform("raw", fortnight, None, TierParams(granularity="weekly"))


def test_raw_keeps_the_energy_at_the_decided_granularity(fortnight: pd.DataFrame) -> None:
    release = transform("raw", fortnight, None, TierParams(granularity="daily"))
    assert release.frame[ENERGY].sum() == fortnight[ENERGY].sum()
    assert len(release.frame) == 1_200 * 14
    assert release.manifest.transforms == ["coarsen_time(day)"]


def test_raw_refuses_to_invent_finer_data(fortnight: pd.DataFrame) -> None:
    daily = transform("raw", fortnight, None, TierParams(granularity="daily")).frame
    with pytest.raises(InvalidData, match="coarser than the hourly asked"):
        transform("raw", daily, None, TierParams(granularity="hourly"))


def test_C3_3_pseudonymised_has_no_identifier_and_needs_the_key(fortnight: pd.DataFrame) -> None:
    with pytest.raises(InvalidParameter, match="pseudonym key"):
        transform("pseudonymised", fortnight, None, TierParams(granularity="hourly"))
    release = transform(
        "pseudonymised", fortnight, None, TierParams(granularity="hourly", pseudonym_key=key())
    )
    text = release.frame.to_csv()
    assert "M000000001" not in text
    assert release.frame[METER].astype(str).str.startswith("ps1:1:").all()
    assert "pseudonymised data is still personal data" in release.manifest.notes


def test_C3_3_generalised_records_each_stand_for_k_households(
    pop: Population, fortnight: pd.DataFrame
) -> None:
    release = transform("generalised", fortnight, pop.households, TierParams(granularity="hourly"))
    frame = release.frame
    assert METER not in frame.columns and "postcode" not in frame.columns
    assert (frame[MEMBERS] >= 15).all()
    assert release.manifest.k_reached is not None and release.manifest.k_reached >= 15
    assert (frame["interval_s"] == 86_400).all()  # at least daily, whatever was asked
    total = fortnight[ENERGY].sum()
    released = (frame[ENERGY] * frame[MEMBERS]).sum()
    kept = 1 - release.manifest.suppressed / 1_200
    assert released == pytest.approx(total * kept, rel=0.05)


def test_generalised_needs_households(fortnight: pd.DataFrame) -> None:
    with pytest.raises(InvalidParameter, match="households"):
        transform("generalised", fortnight, None, TierParams())
    with pytest.raises(MissingColumns, match="tariff"):
        transform("generalised", fortnight, pd.DataFrame({METER: ["x"], "postcode": ["AB1"]}),
                  TierParams())  # fmt: skip


def _week_matrix(frame: pd.DataFrame, ids: str, week: int) -> pd.DataFrame:
    """One row per released record: its readings of that week, in time order."""
    day = (frame[START] - frame[START].min()).dt.days
    part = frame[(day // 7) == week]
    matrix: pd.DataFrame = part.pivot_table(index=ids, columns=START, values=ENERGY, observed=True)
    return matrix


def test_C3_3_linkage_is_high_when_pseudonymised_and_at_most_1_over_k_when_generalised(
    pop: Population, fortnight: pd.DataFrame
) -> None:
    """The attacker holds week 1 and week 2 of a tier's releases, pseudonyms re-keyed between
    them, and links each week-2 record to the week-1 record with the nearest habits."""
    week = 7 * 96
    first = fortnight[fortnight[START] < fortnight[START].min() + pd.Timedelta(days=7)]
    second = fortnight[fortnight[START] >= fortnight[START].min() + pd.Timedelta(days=7)]
    p1 = transform("pseudonymised", first, None, TierParams("15min", pseudonym_key=key()))
    p2 = transform(
        "pseudonymised", second, None, TierParams("15min", pseudonym_key=key().rotated(b"r" * 32))
    )
    m1 = p1.frame[ENERGY].to_numpy().reshape(-1, week)  # rows come per meter, in time order
    m2 = p2.frame[ENERGY].to_numpy().reshape(-1, week)
    assert set(p1.frame[METER].astype(str)).isdisjoint(set(p2.frame[METER].astype(str)))
    pseudonymised = nearest_neighbour_linkage(
        distribution_features(m1), distribution_features(m2), np.arange(len(m1))
    ).accuracy

    daily = TierParams("daily")
    g1 = transform("generalised", first, pop.households, daily).frame
    g2 = transform("generalised", second, pop.households, daily).frame
    classes = ["postcode_area", "tariff", "has_pv", "has_ev"]
    r1 = _week_matrix(g1.assign(record=g1[classes].astype(str).agg("|".join, axis=1)), "record", 0)
    r2 = _week_matrix(g2.assign(record=g2[classes].astype(str).agg("|".join, axis=1)), "record", 0)
    sizes = g1.groupby(g1[classes].astype(str).agg("|".join, axis=1))[MEMBERS].first()
    # the attacker sees each class once per week; every member household is behind it
    counts = sizes.loc[r1.index].to_numpy()
    households1 = np.repeat(r1.to_numpy(), counts, axis=0)
    households2 = np.repeat(r2.loc[r1.index].to_numpy(), counts, axis=0)
    generalised = nearest_neighbour_linkage(
        households1, households2, np.arange(len(households1))
    ).accuracy

    assert pseudonymised > 0.3, pseudonymised  # still personal data
    assert generalised <= 1 / 15 + 1e-9, generalised


def test_R4_4_aggregated_tier_has_no_household_and_refuses_differencing(
    pop: Population, fortnight: pd.DataFrame
) -> None:
    day = fortnight[fortnight[START] < fortnight[START].min() + pd.Timedelta(days=1)]
    params = TierParams("hourly", recipient="ems-grid", residential=False)
    release = transform("aggregated", day, pop.households, params)
    assert METER not in release.frame.columns
    released = release.frame[release.frame["status"] == "released"]
    assert (released["members"] >= 15).all() and len(released) > 0
    assert "check_differencing(min_difference=15)" in release.manifest.transforms
    # the same groups less one household, to the same recipient: refused
    one_less = day[day[METER] != "M000000001"]
    history = [PastRelease("rl_1", "ems-grid", release.members)]
    with pytest.raises(DifferencingRefused):
        transform("aggregated", one_less, pop.households, replace(params, history=history))
    # to another recipient it is a first release
    transform("aggregated", one_less, pop.households, replace(params, recipient="other"))


def test_dp_tier_charges_the_budget_and_refuses_beyond_it(
    pop: Population, fortnight: pd.DataFrame
) -> None:
    day = fortnight[fortnight[START] < fortnight[START].min() + pd.Timedelta(days=1)]
    at = datetime(2026, 11, 25, tzinfo=UTC)
    params = TierParams("hourly", recipient="ems-grid", at=at, interval_wh=8_000.0, epsilon=1.0)
    release = transform("dp", day, pop.households, params)
    assert release.spend is not None and release.spend.epsilon == 1.0
    assert release.manifest.mechanism == "laplace" and release.manifest.budget_left == 9.0
    full = [release.spend] * 10
    with pytest.raises(BudgetExceeded):
        transform("dp", day, pop.households, replace(params, ledger=full))
    with pytest.raises(InvalidParameter, match="ε must be in"):
        transform("dp", day, pop.households, replace(params, epsilon=0.0))
    with pytest.raises(InvalidParameter, match="release time"):
        transform("dp", day, pop.households, replace(params, at=None))
    with pytest.raises(InvalidParameter, match="recipient"):
        transform("dp", day, pop.households, replace(params, recipient=None))
