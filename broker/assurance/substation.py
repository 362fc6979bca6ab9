"""The ground the attacks run on, and the per-request method they compare canonical cells with.

The fleet's first substation with its feeders cut to ``ATTACK_FEEDERS`` households, read at the
base interval ``BASE_S`` over ``DP_DAYS`` days from ``DAY0`` (``substation``), under the
broker's rules for aggregates of households (``ATTACK_RULES``); ``per_request`` is the old
per-request aggregate under those rules, computed from the households a request lists: the
attacks' "before".
"""

from __future__ import annotations

import pandas as pd

from broker.assurance.measures import DAY0
from broker.assurance.population import population
from connectors.meters.simulator import FEEDERS_PER_DISTRICT, METERS_PER_FEEDER
from deidentify.aggregate import Aggregated, Rules, aggregate
from deidentify.frames import FEEDER, METER

ATTACK_FEEDERS = (110, 150, 80)
"""Households kept of each feeder of the first substation (the fleet has 150 a feeder): one
feeder below the N rule, and few enough households that a night quarter-hour is dominated."""
MIN_MEMBERS, MAX_SHARE, RESIDENTIAL_FLOOR = 15, 0.15, 100
ATTACK_RULES = Rules.of(MIN_MEMBERS, MAX_SHARE, RESIDENTIAL_FLOOR, True)
"""The broker's rules for aggregates of households: N >= 100, no member above 15 %."""
BASE_S = 900
DP_INTERVAL_S = 3600
DP_DAYS = 7
DP_EPSILON = 1.0
DAY_S = 86_400


def substation(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first substation's households, ``ATTACK_FEEDERS`` of each feeder, and their
    quarter-hour readings over ``DP_DAYS`` days from ``DAY0``."""
    fleet = population(FEEDERS_PER_DISTRICT * METERS_PER_FEEDER, seed)
    feeders = [group for _, group in fleet.households.groupby(FEEDER, sort=True)]
    kept = pd.concat(
        [group.iloc[:n] for group, n in zip(feeders, ATTACK_FEEDERS, strict=True)],
        ignore_index=True,
    )
    readings = fleet.readings(DAY0, DP_DAYS, BASE_S)
    readings = readings[readings[METER].isin(kept[METER])].reset_index(drop=True)
    readings[METER] = readings[METER].cat.remove_unused_categories()
    return kept, readings


def per_request(readings: pd.DataFrame, households: pd.DataFrame, interval: int) -> Aggregated:
    return aggregate(
        readings,
        households,
        min_members=MIN_MEMBERS,
        max_share=MAX_SHARE,
        min_members_residential=RESIDENTIAL_FLOOR,
        residential=True,
        interval=interval,
    )
