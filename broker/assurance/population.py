"""The households the privacy report measures: the demo's fleet, grown from the same model.

The demo stores 200 meters; errors at group sizes of 100, 1 000 and 10 000 households need more.
So the report draws households from the demo fleet's own load model and seed
(``connectors.meters.load``, ``SEED``, which the demo draws its fleet with): households 0..199
are the demo's meters, the rest come from the same distribution, with the same feeder, postcode
and tariff layout as the simulator gives its meters (150 meters a feeder, 3 feeders a district,
a district per postcode; substations are districts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from connectors.meters.households import TARIFFS
from connectors.meters.load import DAY_S, LoadModel
from connectors.meters.simulator import FEEDERS_PER_DISTRICT, METERS_PER_FEEDER
from deidentify import frames as F

SEED = 7
"""The reference fleet's seed: the report's default, and the one ``broker demo`` draws with."""
_AREAS = ("AB", "CD", "EF", "GH", "JK", "LM", "NP", "RS", "TU", "WY")


@dataclass(frozen=True)
class Population:
    households: pd.DataFrame
    """One row per meter: meter_id, customer_ref, postcode, feeder, substation, tariff,
    has_pv, has_ev."""
    model: LoadModel

    def readings(self, first_day: int, days: int, interval_s: int = 900) -> pd.DataFrame:
        """Readings of every household for ``days`` days from ``first_day`` (days since
        1970-01-01): one row per meter and interval."""
        hh = self.model.households(range(len(self.households)))
        per_day = DAY_S // interval_s
        wh = self.model.energy_wh(hh, first_day * DAY_S, days * per_day, interval_s)
        n, count = wh.shape
        starts = pd.to_datetime(
            (first_day * DAY_S + np.arange(count, dtype=np.int64) * interval_s), unit="s", utc=True
        )
        return pd.DataFrame(
            {
                F.METER: pd.Categorical(np.repeat(self.households[F.METER].to_numpy(), count)),
                F.START: np.tile(starts, n),
                F.INTERVAL: np.full(n * count, interval_s, dtype=np.int64),
                F.ENERGY: wh.reshape(-1).astype(np.float64),
            }
        )


def population(households: int, seed: int) -> Population:
    model = LoadModel(seed)
    index = np.arange(households, dtype=np.int64)
    hh = model.households(index)
    feeder = index // METERS_PER_FEEDER
    district = feeder // FEEDERS_PER_DISTRICT
    areas = np.array(_AREAS)[district // 20 % len(_AREAS)]
    frame = pd.DataFrame(
        {
            F.METER: [f"M{i + 1:09d}" for i in index],
            F.CUSTOMER: [f"CUST-{i + 1:07d}" for i in index],
            F.POSTCODE: [f"{a}{d % 20 + 1}" for a, d in zip(areas, district, strict=True)],
            F.FEEDER: [f"F-{f + 1:03d}" for f in feeder],
            F.SUBSTATION: [f"S-{d + 1:03d}" for d in district],
            F.TARIFF: np.array(TARIFFS)[hh.tariff],
            F.HAS_PV: hh.has_pv,
            F.HAS_EV: hh.has_ev,
        }
    )
    return Population(frame, model)
