"""Household electricity import, vectorised across households: the energy the meters report.

The simulated meters need load curves that look like real homes (so the MDMS's validation, the
de-identification and the aggregates downstream are exercised on plausible data) and that can
be generated for a million meters quickly and reproducibly. Each day of each household is
built on a 5-minute grid from its own random streams (``rng``): an always-on base load, fridge
compressor cycles, lighting and appliances following a daily activity shape (weekdays for
households out at work differ from those at home, weekends differ again), kettle boils, cooking
(breakfast, lunch, dinner), the washing machine on some days, EV charging in the evening or
after midnight on a night tariff, and rooftop PV by day. Winter days use more (longer dark
evenings, a seasonal factor); PV follows day length and sun height at about 52° N, under
weather shared by the whole region. The meter's +A register counts import only, so PV lowers
the import down to zero, never below.

Time is UTC, taken as local solar time (a British fleet outside summer time). The 5-minute grid
is summed to the requested interval, so a household's 15-minute values are its 5-minute values
summed (before rounding to whole Wh).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from connectors.meters.households import EV_NIGHT, Households, Stream, draw_households
from connectors.meters.rng import F64, REGION, Streams

INTERVALS_S = (300, 900, 1800, 3600)
SLOT_S = 300
SLOTS = 86400 // SLOT_S
DAY_S = 86400
_EDGES = SLOTS + 2
_BLOCK = 8192  # households per internal block: bounds the (block x 288) temporaries
_HOURS = (np.arange(SLOTS) + 0.5) * SLOT_S / 3600.0
_SLOT_MIN = SLOT_S / 60.0
_EPOCH = dt.date(1970, 1, 1)

# Relative activity per hour (value at the middle of each hour): at home on weekdays, out on
# weekdays, weekends.
_ACTIVITY = np.array(
    [
        [.15, .1, .08, .08, .08, .12, .35, .6, .55, .45, .45, .45,
         .5, .45, .45, .5, .6, .8, .95, 1, .95, .8, .55, .3],
        [.15, .1, .08, .08, .08, .12, .4, .65, .4, .12, .08, .08,
         .1, .08, .08, .12, .3, .75, .95, 1, .95, .8, .55, .3],
        [.2, .12, .1, .08, .08, .1, .15, .3, .5, .6, .6, .6,
         .65, .6, .55, .55, .6, .8, .95, 1, .95, .85, .6, .35],
    ]
)  # fmt: skip
_KETTLE_AT = np.array([7.25, 10.5, 13.0, 16.0, 19.5, 21.75]) * 60
_KETTLE_P = np.array(
    [
        [0.9, 0.6, 0.6, 0.6, 0.7, 0.5],
        [0.9, 0.1, 0.05, 0.1, 0.8, 0.5],
        [0.8, 0.7, 0.6, 0.6, 0.7, 0.5],
    ]
)  # chance of each kettle boil above, per activity shape


@dataclass(frozen=True, slots=True)
class Day:
    """What the calendar says about one day: weekend or not, season, daylight (hours, UTC)."""

    number: int  # days since 1970-01-01
    weekend: bool
    season: float  # about 1.2 in mid-January, 0.8 in mid-July
    sunrise: float
    sunset: float
    sun_height: float  # 0.3 at midwinter, 1 at midsummer

    @classmethod
    def of(cls, number: int) -> Day:
        date = _EPOCH + dt.timedelta(days=number)
        angle = 2 * np.pi * (date.timetuple().tm_yday - 1) / 365.25
        length = 12.0 + 4.3 * np.sin(angle - 2 * np.pi * 79 / 365.25)
        return cls(
            number=number,
            weekend=date.weekday() >= 5,
            season=float(1.0 + 0.2 * np.cos(angle - 2 * np.pi * 14 / 365.25)),
            sunrise=float(12.0 - length / 2),
            sunset=float(12.0 + length / 2),
            sun_height=float(0.3 + 0.7 * (length - 7.7) / 8.6),
        )


@dataclass(frozen=True, slots=True)
class Events:
    """Appliance runs of constant power: start and end in minutes from the day's midnight.

    Each field is (households, runs per household); ``active`` says which runs happen.
    """

    start_min: F64
    end_min: F64
    power_w: F64
    active: NDArray[np.bool_]

    @classmethod
    def of(cls, start: F64, end: F64, power: F64, active: NDArray[np.bool_]) -> Events:
        """Events from columns or (households, runs) arrays, broadcast to one shape."""
        cols = [x.reshape(len(x), -1) for x in (start, end, power, active)]
        s, e, p, a = np.broadcast_arrays(*cols)
        return cls(s, e, p, a)


class LoadModel:
    """The load of the households of one seeded fleet."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams = Streams(seed)

    def households(self, index: range | NDArray[np.int64] | list[int]) -> Households:
        """The households numbered ``index`` (see :func:`draw_households`)."""
        return draw_households(self.seed, index)

    def energy_wh(
        self, households: Households, start_s: int, count: int, interval_s: int = 900
    ) -> NDArray[np.uint32]:
        """(households, count) imported Wh of the intervals starting at ``start_s`` (UTC)."""
        _check_range(start_s, count, interval_s)
        out = np.empty((len(households), count), dtype=np.uint32)
        for lo in range(0, len(households), _BLOCK):
            block = households[lo : lo + _BLOCK]
            out[lo : lo + _BLOCK] = self._block_wh(block, start_s, count, interval_s)
        return out

    def _block_wh(
        self, households: Households, start_s: int, count: int, interval_s: int
    ) -> NDArray[np.uint32]:
        end_s = start_s + count * interval_s
        per = interval_s // SLOT_S
        parts = []
        for day in range(start_s // DAY_S, (end_s - 1) // DAY_S + 1):
            lo, hi = max(start_s, day * DAY_S), min(end_s, (day + 1) * DAY_S)
            grid = self.day_wh(households, day)
            part = grid[:, (lo - day * DAY_S) // SLOT_S : (hi - day * DAY_S) // SLOT_S]
            parts.append(part.reshape(len(households), -1, per).sum(axis=2))
        wh: NDArray[np.uint32] = np.rint(np.concatenate(parts, axis=1)).astype(np.uint32)
        return wh

    def day_wh(self, households: Households, day: int) -> F64:
        """(households, 288) imported Wh per 5-minute slot of ``day`` (days since 1970-01-01)."""
        return np.maximum(self.day_w(households, day), 0.0) * (SLOT_S / 3600.0)

    def day_w(self, households: Households, day: int) -> F64:
        """(households, 288) mean net import in W per 5-minute slot (negative: export)."""
        d = Day.of(day)
        w = self._always_on(households, d) + self._activity(households, d)
        events = [*self._kettle(households, d), *self._cooking(households, d)]
        events += [*self._washing(households, d), *self._ev(households, d)]
        w += _render(events, len(households))
        return w - self._pv(households, d)

    def _always_on(self, hh: Households, d: Day) -> F64:
        phase = self._streams.uniform(hh.index, d.number, Stream.FRIDGE, 1)
        period = hh.fridge_period_min[:, np.newaxis]
        on = hh.fridge_duty[:, np.newaxis] * period
        cycles = np.arange(SLOTS + 1) * (_SLOT_MIN / period) + phase  # time in cycles
        whole = np.floor(cycles)
        cumulative_on = whole * on + np.minimum((cycles - whole) * period, on)
        fridge = hh.fridge_w[:, np.newaxis] * np.diff(cumulative_on, axis=1) / _SLOT_MIN
        return fridge + (hh.base_w * d.season)[:, np.newaxis]

    def _activity(self, hh: Households, d: Day) -> F64:
        row = np.full(len(hh), 2) if d.weekend else np.where(hh.away_weekdays, 1, 0)
        shape = _activity_shapes()[row]
        noise = 0.7 + 0.6 * self._streams.uniform(hh.index, d.number, Stream.NOISE, SLOTS)
        dark = np.clip(d.sunrise + 0.5 - _HOURS, 0, 1) + np.clip(_HOURS - d.sunset + 0.5, 0, 1)
        misc = (hh.misc_w * d.season)[:, np.newaxis] * noise
        activity: F64 = shape * (misc + hh.light_w[:, np.newaxis] * np.minimum(dark, 1.0))
        return activity

    def _kettle(self, hh: Households, d: Day) -> list[Events]:
        u = self._streams.uniform(hh.index, d.number, Stream.KETTLE, 12)
        z = self._streams.normal(hh.index, d.number, Stream.KETTLE_NORMAL, 6)
        row = np.full(len(hh), 2) if d.weekend else np.where(hh.away_weekdays, 1, 0)
        chance = _KETTLE_P[row] * np.minimum(1.0, 0.55 + 0.15 * hh.occupants)[:, np.newaxis]
        late = np.array([75.0, 0, 0, 0, 0, 0]) if d.weekend else 0.0
        start = _KETTLE_AT + late + 35.0 * z
        duration = 2.0 + 0.4 * hh.occupants[:, np.newaxis] * u[:, 6:]
        power = np.broadcast_to(hh.kettle_w[:, np.newaxis], start.shape)
        return [_within_day(start, duration, power, u[:, :6] < chance)]

    def _cooking(self, hh: Households, d: Day) -> list[Events]:
        u = self._streams.uniform(hh.index, d.number, Stream.COOKING, 9)
        z = self._streams.normal(hh.index, d.number, Stream.COOKING_NORMAL, 3)
        at = np.array([8.75, 12.75, 18.75] if d.weekend else [7.0, 12.5, 18.25]) * 60
        lunch = 0.5 if d.weekend else np.where(hh.away_weekdays, 0.05, 0.4)
        chance = np.column_stack(
            [np.full(len(hh), 0.6 if d.weekend else 0.35), np.broadcast_to(lunch, len(hh)),
             np.full(len(hh), 0.85)]
        )  # fmt: skip
        duration = np.array([8.0, 15.0, 30.0]) + np.array([12.0, 25.0, 45.0]) * u[:, 3:6]
        power = np.column_stack([1200 + 1000 * u[:, 6], 1500 + 500 * u[:, 7], 0.6 * hh.cook_w])
        start = at + np.array([30.0, 30.0, 45.0]) * z
        return [_within_day(start, duration, power, u[:, :3] < chance)]

    def _washing(self, hh: Households, d: Day) -> list[Events]:
        u = self._streams.uniform(hh.index, d.number, Stream.WASHING, 5)
        active = u[:, 0] < hh.washes_per_day * (1.5 if d.weekend else 1.0)
        start = 7 * 60 + 14 * 60 * u[:, 1]
        heat = 12.0 + 8.0 * u[:, 2]
        spin = 60.0 + 30.0 * u[:, 3]
        return [
            _within_day(start, heat, 1900 + 300 * u[:, 4], active),
            _within_day(start + heat, spin, np.full(len(hh), 250.0), active),
        ]

    def _ev(self, hh: Households, d: Day) -> list[Events]:
        """Sessions that started yesterday (running past midnight) and today."""
        return [self._ev_session(hh, d.number - 1, -1440.0), self._ev_session(hh, d.number, 0.0)]

    def _ev_session(self, hh: Households, day: int, shift_min: float) -> Events:
        u = self._streams.uniform(hh.index, day, Stream.EV, 3)
        weekend = Day.of(day).weekend
        active = hh.has_ev & (u[:, 0] < (0.35 if weekend else 0.6))
        night = hh.tariff == EV_NIGHT
        start = np.where(night, 1470.0 + 30 * u[:, 1], 1050.0 + 240 * u[:, 1]) + shift_min
        power = hh.ev_kw * 950.0
        kwh = 5.0 + 17.0 * u[:, 2]
        duration = 60.0 * kwh / np.maximum(hh.ev_kw * 0.95, 1.0)
        return Events.of(start, start + duration, power, active)

    def _pv(self, hh: Households, d: Day) -> F64:
        out = np.zeros((len(hh), SLOTS))
        rows = np.flatnonzero(hh.has_pv)
        if len(rows) == 0:
            return out
        region = self._streams.uniform(np.array([REGION]), d.number, Stream.WEATHER, 1)[0, 0]
        weather = 0.15 + 0.85 * region**0.7
        index = hh.index[rows]
        local = 0.9 + 0.2 * self._streams.uniform(index, d.number, Stream.PV, 1)
        passing = self._streams.uniform(index, d.number, Stream.CLOUDS, SLOTS)
        peak = hh.pv_kwp[rows, np.newaxis] * 800.0 * d.sun_height * weather * local
        out[rows] = peak * _clear_sky(d) * (1.0 - (1.0 - weather) * passing)
        return out


@functools.cache
def _activity_shapes() -> F64:
    """The three hourly activity rows interpolated to the 288 slots (built on first use)."""
    hours = np.arange(24) + 0.5
    return np.stack([np.interp(_HOURS, hours, row, period=24) for row in _ACTIVITY])


def _clear_sky(d: Day) -> F64:
    """Relative PV output of a clear day per slot: 0 at night, 1 at solar noon."""
    daylight = np.clip((_HOURS - d.sunrise) / (d.sunset - d.sunrise), 0.0, 1.0)
    sky: F64 = np.sin(np.pi * daylight) ** 1.3
    return sky


def _within_day(start: F64, duration: F64, power: F64, active: NDArray[np.bool_]) -> Events:
    """Runs that must fit in the day (a late jitter is pulled back before midnight)."""
    start = np.clip(start, 0.0, 1440.0 - duration)
    return Events.of(start, start + duration, power, active)


def _render(events: list[Events], households: int) -> F64:
    """(households, 288) mean W per slot of constant-power runs, exact to the fraction of a slot.

    A run from slot position ``a`` to ``b`` (fractional) adds ``P`` to every slot it covers and
    ``P`` times the covered fraction to the slots it starts and ends in. On a difference array
    that is ``+P(1 - f), +P f`` at ``floor(a)`` and ``floor(a) + 1`` and the same negated at
    ``b``; one ``bincount`` and a cumulative sum give every household's curve at once.
    """
    index, weight = [], []
    for ev in events:
        rows = np.broadcast_to(np.arange(households)[:, np.newaxis], ev.active.shape)[ev.active]
        power = ev.power_w[ev.active]
        for edge, sign in ((ev.start_min, 1.0), (ev.end_min, -1.0)):
            at = np.clip(edge[ev.active] / _SLOT_MIN, 0, SLOTS)
            slot = np.floor(at)
            frac = at - slot
            base = rows * _EDGES + slot.astype(np.int64)
            index += [base, base + 1]
            weight += [sign * power * (1.0 - frac), sign * power * frac]
    delta = np.bincount(
        np.concatenate(index), np.concatenate(weight), minlength=households * _EDGES
    )
    watts: F64 = np.cumsum(delta.reshape(households, _EDGES).astype(np.float64), axis=1)
    return watts[:, :SLOTS]


def _check_range(start_s: int, count: int, interval_s: int) -> None:
    if interval_s not in INTERVALS_S:
        raise ValueError(f"interval of {interval_s} s: choose one of {INTERVALS_S}")
    if start_s % interval_s:
        raise ValueError(f"start {start_s} is not on a {interval_s} s boundary")
    if count < 1:
        raise ValueError("at least one interval")
