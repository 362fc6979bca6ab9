"""The households behind the simulated meters: who lives there and what they own, from a seed.

A household's attributes are drawn from its own stream (seed, household number), so household
42 is the same whether 100 or 1,000,000 households are drawn, and whether they are drawn in one
go or in chunks. The numbers are set to give a British-looking fleet: one to five occupants,
about 20 % with rooftop PV and 15 % with an electric vehicle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from connectors.meters.rng import F64, Streams

TARIFFS = ("standard", "economy7", "time-of-use", "ev-night")
EV_NIGHT = TARIFFS.index("ev-night")
_OCCUPANT_SHARES = np.cumsum([0.29, 0.35, 0.16, 0.14, 0.06])
PV_SHARE = 0.20
EV_SHARE = 0.15


class Stream(IntEnum):
    """Stream ids: one independent stream per purpose and household-day."""

    ATTRIBUTES = 1
    ATTRIBUTES_NORMAL = 2
    NOISE = 3
    FRIDGE = 4
    KETTLE = 5
    KETTLE_NORMAL = 6
    COOKING = 7
    COOKING_NORMAL = 8
    WASHING = 9
    EV = 10
    PV = 11
    CLOUDS = 12
    WEATHER = 13
    REGISTER = 14


@dataclass(frozen=True, slots=True)
class Households:
    """Column-wise attributes of a set of households (row i is household ``index[i]``)."""

    index: NDArray[np.int64]
    occupants: NDArray[np.int64]
    away_weekdays: NDArray[np.bool_]  # out at work or school on weekdays
    base_w: F64  # always-on standby load
    misc_w: F64  # lighting, TV, computers, ... at full activity
    light_w: F64  # extra lighting after dark at full activity
    fridge_w: F64
    fridge_period_min: F64
    fridge_duty: F64
    kettle_w: F64
    cook_w: F64
    washes_per_day: F64
    has_pv: NDArray[np.bool_]
    pv_kwp: F64  # 0 without PV
    has_ev: NDArray[np.bool_]
    ev_kw: F64  # 0 without EV
    tariff: NDArray[np.int64]  # index into TARIFFS

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice | NDArray[np.int64] | NDArray[np.bool_]) -> Households:
        """The households of ``rows`` (a slice, indices or a mask), as a new ``Households``."""
        return Households(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _index(index: Sequence[int] | range | NDArray[np.int64]) -> NDArray[np.int64]:
    out = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
    if len(out) and out.min() < 0:
        raise ValueError("household numbers are >= 0")
    return out


def draw_households(seed: int, index: Sequence[int] | range | NDArray[np.int64]) -> Households:
    """The households numbered ``index`` of the fleet seeded with ``seed``."""
    idx = _index(index)
    streams = Streams(seed)
    u = streams.uniform(idx, 0, Stream.ATTRIBUTES, 14)
    z = streams.normal(idx, 0, Stream.ATTRIBUTES_NORMAL, 2)
    occupants = np.searchsorted(_OCCUPANT_SHARES, u[:, 0], side="right").astype(np.int64) + 1
    has_pv, has_ev = u[:, 8] < PV_SHARE, u[:, 10] < EV_SHARE
    return Households(
        index=idx,
        occupants=occupants,
        away_weekdays=u[:, 1] < 0.6,
        base_w=(55.0 + 18.0 * occupants) * _lognormal(z[:, 0]),
        misc_w=(110.0 + 60.0 * occupants) * _lognormal(z[:, 1]),
        light_w=(40.0 + 20.0 * occupants) * (0.6 + 0.8 * u[:, 13]),
        fridge_w=70.0 + 70.0 * u[:, 2],
        fridge_period_min=35.0 + 35.0 * u[:, 3],
        fridge_duty=0.3 + 0.2 * u[:, 4],
        kettle_w=2000.0 + 1000.0 * u[:, 5],
        cook_w=1800.0 + 1400.0 * u[:, 6],
        washes_per_day=(0.06 + 0.06 * occupants) * (0.7 + 0.6 * u[:, 7]),
        has_pv=has_pv,
        pv_kwp=np.where(has_pv, 2.5 + 3.5 * u[:, 9], 0.0),
        has_ev=has_ev,
        ev_kw=np.where(has_ev, np.where(u[:, 11] < 0.7, 7.2, 3.6), 0.0),
        tariff=_tariffs(has_ev, u[:, 12]),
    )


def _lognormal(z: F64) -> F64:
    """A spread factor around 1 (sigma 0.3 in log space): some homes use far more than others."""
    factor: F64 = np.exp(0.3 * z)
    return factor


def _tariffs(has_ev: NDArray[np.bool_], u: F64) -> NDArray[np.int64]:
    """EV owners mostly take a night tariff (their car charges after midnight)."""
    others = np.searchsorted(np.array([0.7, 0.85]), u, side="right").astype(np.int64)
    return np.where(has_ev, np.where(u < 0.7, EV_NIGHT, 0), others)
