"""Generalisation and suppression for the generalised tier (X.1332 C3.3, C4.3; ARCHITECTURE §3.4).

Research needs load shapes, not households: readings are summed to coarser intervals, locations
coarsened to postcode district or area and substation, personal fields dropped, and the
households' quasi-identifiers (postcode area, tariff, PV, EV) generalised until every
combination is shared by at least k households (k = 15 by default).

Empty frames pass through every transform as empty frames (nothing to release is still
nothing, and the caller decides whether to release it); an empty frame is k-anonymous.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from deidentify.errors import InvalidData, InvalidParameter, MissingColumns
from deidentify.frames import (
    ENERGY,
    FEEDER,
    HAS_EV,
    HAS_PV,
    INTERVAL,
    METER,
    POSTCODE,
    QUASI_IDENTIFIERS,
    START,
    SUBSTATION,
    TARIFF,
    require,
    require_readings,
)

POSTCODE_AREA = "postcode_area"
POSTCODE_DISTRICT = "postcode_district"
COVERED = "covered_s"
"""Seconds of readings summed into a coarse interval: below ``interval_s`` when some are missing."""
SUPPRESSED = "*"
DEFAULT_K = 15
_LOCATION = (POSTCODE, POSTCODE_DISTRICT, POSTCODE_AREA, FEEDER, SUBSTATION)

TimeLevel = Literal["hour", "day", "month"]
LocationLevel = Literal["district", "area"]
_GRAIN_S = {"hour": 3600, "day": 86400, "month": 86400}
"""What the data's interval must divide for each level (a month is whole days)."""
_NS = 1_000_000_000
Ints = NDArray[np.int64]

# --- time -----------------------------------------------------------------------------------


def coarsen_time(readings: pd.DataFrame, to: TimeLevel) -> pd.DataFrame:
    """Readings summed per meter into hours, days or calendar months (UTC).

    Returns ``meter_id, start, interval_s, energy_wh, covered_s``, one row per meter and
    coarse interval that has readings, ordered by meter (first appearance) and start; other
    columns are not carried. Energy is summed exactly (integers stay integers). Refused: an
    unknown level, a coarser interval in the data than ``to``, intervals that do not divide a
    day, starts off their interval's boundary, overlapping readings of one meter, naive times.
    """
    if to not in _GRAIN_S:
        raise InvalidParameter(f"coarsen time to one of {', '.join(_GRAIN_S)}, not {to!r}")
    require_readings(readings)
    ns = _utc_ns(readings[START])
    interval = _intervals(readings[INTERVAL], to)
    if (ns % (interval * _NS)).any():
        raise InvalidData("readings start off their interval's boundary")
    if readings[METER].isna().any():
        raise InvalidData(f"{int(readings[METER].isna().sum())} reading(s) have no {METER}")
    codes, meters = pd.factorize(readings[METER])
    order = np.lexsort((ns, codes))
    codes, ns, interval = codes[order], ns[order], interval[order]
    _refuse_overlaps(codes, ns, interval)
    bucket, length_s = _buckets(ns, to)
    change = (codes[1:] != codes[:-1]) | (bucket[1:] != bucket[:-1])
    first = np.flatnonzero(np.r_[len(codes) > 0, change])
    covered = readings[COVERED].to_numpy()[order] if COVERED in readings else interval
    unit = readings[START].dt.unit
    return pd.DataFrame(
        {
            METER: meters.take(codes[first]),
            START: pd.to_datetime(bucket[first], utc=True).as_unit(unit),
            INTERVAL: length_s[first],
            ENERGY: _sums(_energy(readings)[order], first),
            COVERED: _sums(covered.astype(np.int64), first),
        }
    )


def _utc_ns(start: pd.Series[Any]) -> NDArray[np.int64]:
    if not isinstance(start.dtype, pd.DatetimeTZDtype):
        raise MissingColumns(f"readings column {START} must be time-zone aware (UTC)")
    naive = start.dt.tz_convert("UTC").dt.tz_localize(None)
    ns: Ints = naive.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns


def _intervals(column: pd.Series[Any], to: str) -> NDArray[np.int64]:
    if not pd.api.types.is_integer_dtype(column):
        raise MissingColumns(f"readings column {INTERVAL} must hold whole seconds")
    interval = column.to_numpy(dtype=np.int64)
    if (interval <= 0).any() or (_GRAIN_S["day"] % interval).any():
        raise InvalidData(f"readings intervals must divide a day (86400 s) exactly, in {INTERVAL}")
    if (interval > _GRAIN_S[to]).any():
        raise InvalidParameter(
            f"readings at {int(interval.max())} s cannot be coarsened to {to}: finer than the data"
        )
    return interval


def _refuse_overlaps(
    codes: NDArray[np.intp], ns: NDArray[np.int64], interval: NDArray[np.int64]
) -> None:
    """Sorted by meter and start, each reading must end before the meter's next one starts."""
    same = codes[1:] == codes[:-1]
    overlap = same & (ns[:-1] + interval[:-1] * _NS > ns[1:])
    if overlap.any():
        raise InvalidData(f"{int(overlap.sum())} reading(s) overlap another of the same meter")


def _buckets(ns: NDArray[np.int64], to: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each reading's coarse interval start (ns since the epoch, UTC) and its length in s."""
    if to != "month":
        size = _GRAIN_S[to]
        start = ns // (size * _NS) * (size * _NS)
        return start, np.full(len(ns), size, dtype=np.int64)
    month = ns.astype("datetime64[ns]").astype("datetime64[M]")
    start = month.astype("datetime64[ns]").astype(np.int64)
    end = (month + 1).astype("datetime64[ns]").astype(np.int64)
    return start, (end - start) // _NS


def _energy(readings: pd.DataFrame) -> NDArray[Any]:
    energy = readings[ENERGY]
    if pd.api.types.is_integer_dtype(energy) or pd.api.types.is_bool_dtype(energy):
        return energy.to_numpy(dtype=np.int64)
    return energy.to_numpy(dtype=np.float64)


def _sums(values: NDArray[Any], first: NDArray[np.intp]) -> NDArray[Any]:
    if len(values) == 0:
        return values[:0]
    return np.add.reduceat(values, first)


# --- location and fields --------------------------------------------------------------------

_POSTCODE_RE = re.compile(r"([A-Z]{1,2})([0-9][0-9A-Z]?) ?(?:[0-9][A-Z]{2})?")
"""A UK postcode (outward code, then optionally the 3-character inward code), or an outward
code alone: area letters, then the district."""


def coarsen_location(households: pd.DataFrame, level: LocationLevel = "district") -> pd.DataFrame:
    """Households with the postcode cut to its district and area, and feeders to substations.

    Adds ``postcode_area`` ("SW1A 1AA" -> "SW") and, at level ``district``, ``postcode_district``
    ("SW1A"), as categoricals, and drops ``postcode``; a frame already cut to districts can be
    cut to areas. A ``feeder`` column is dropped, which needs the ``substation`` column that
    stays. Refused: an unknown level, no postcode, a missing or malformed postcode (the message
    counts them and never quotes one: postcodes are quasi-identifiers).
    """
    if level not in ("district", "area"):
        raise InvalidParameter(f"coarsen location to district or area, not {level!r}")
    cut = POSTCODE not in households and POSTCODE_DISTRICT in households
    source = POSTCODE_DISTRICT if cut else POSTCODE
    require(households, [source], "households")
    if FEEDER in households:
        require(households, [SUBSTATION], "households (a feeder coarsens to its substation)")
    district, area = _postcode_parts(households[source])
    out = drop_fields(households, (POSTCODE, POSTCODE_DISTRICT, FEEDER))
    if level == "district":
        out[POSTCODE_DISTRICT] = district
    out[POSTCODE_AREA] = area
    return out


def _postcode_parts(postcodes: pd.Series[Any]) -> tuple[pd.Series[Any], pd.Series[Any]]:
    if postcodes.isna().any():
        raise InvalidData(f"{int(postcodes.isna().sum())} household(s) have no postcode")
    codes, uniques = pd.factorize(postcodes)
    parts = [_POSTCODE_RE.fullmatch(" ".join(str(u).upper().split())) for u in uniques.tolist()]
    bad = [i for i, m in enumerate(parts) if m is None]
    if bad:
        rows = int(np.isin(codes, bad).sum())
        raise InvalidData(f"{rows} household(s) have a postcode that is not a UK postcode")
    districts = [m.group(1) + m.group(2) for m in parts if m is not None]
    areas = [m.group(1) for m in parts if m is not None]
    return _categorical(districts, codes, postcodes), _categorical(areas, codes, postcodes)


def _categorical(
    values: list[str], codes: NDArray[np.intp], like: pd.Series[Any]
) -> pd.Series[Any]:
    column = pd.Series(np.array(values, dtype=object).take(codes), index=like.index, dtype="str")
    return column.astype("category")


def drop_fields(frame: pd.DataFrame, fields: Iterable[str]) -> pd.DataFrame:
    """``frame`` without ``fields`` (those it does not have are already gone)."""
    names = [fields] if isinstance(fields, str) else list(fields)
    return frame.drop(columns=[f for f in names if f in frame.columns])


# --- k-anonymity ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KAnonReport:
    """The equivalence classes of a frame on its quasi-identifiers, measured against ``k``."""

    k: int
    quasi_identifiers: tuple[str, ...]
    rows: int
    classes: int
    smallest_class: int | None
    """The k reached: the smallest class (None for an empty frame)."""
    classes_below_k: int
    rows_below_k: int
    suppressed: int = 0
    """Rows removed by :func:`enforce_k_anonymity` because no generalisation covered them."""
    steps: tuple[tuple[str, int], ...] = ()
    """Generalisation steps applied, in order, with the number of rows each touched."""

    @property
    def holds(self) -> bool:
        return self.rows_below_k == 0


@dataclass(frozen=True, slots=True)
class Step:
    """One generalisation of a quasi-identifier: each value of ``column`` to a coarser one."""

    column: str
    name: str
    generalise: Callable[[Any], Hashable]


TARIFF_FAMILIES = {
    "standard": "single-rate",
    "economy7": "multi-rate",
    "ev-night": "multi-rate",
    "time-of-use": "multi-rate",
}
"""Tariff -> family; a tariff not listed goes straight to ``*``."""


def _suppress(_: Any) -> str:
    return SUPPRESSED


def _tariff_family(tariff: Any) -> str:
    return TARIFF_FAMILIES.get(tariff, SUPPRESSED) if isinstance(tariff, str) else SUPPRESSED


def _district_area(district: Any) -> str:
    match = re.match(r"[A-Z]{1,2}", district) if isinstance(district, str) else None
    return match.group(0) if match else SUPPRESSED


DEFAULT_HIERARCHY: tuple[Step, ...] = (
    Step(HAS_EV, "has_ev -> *", _suppress),
    Step(HAS_PV, "has_pv -> *", _suppress),
    Step(TARIFF, "tariff -> tariff family", _tariff_family),
    Step(POSTCODE_DISTRICT, "postcode district -> area", _district_area),
    Step(TARIFF, "tariff family -> *", _suppress),
    Step(POSTCODE_DISTRICT, "postcode district (now its area) -> *", _suppress),
    Step(SUBSTATION, "substation -> *", _suppress),
    Step(POSTCODE_AREA, "postcode area -> *", _suppress),
)
"""The order generalisation climbs: the flags first (a bit each), then tariff to its family and
district to area, then tariff and location to ``*`` (location last: research groups by it).
Steps for columns that are not quasi-identifiers of the call are skipped; a column without a
step is never generalised (its rare values end suppressed)."""


def k_anonymity(
    households: pd.DataFrame,
    quasi_identifiers: Sequence[str] = QUASI_IDENTIFIERS,
    k: int = DEFAULT_K,
) -> KAnonReport:
    """How far ``households`` is from k-anonymity on ``quasi_identifiers`` (missing = a value).

    Every location column present (postcode, district, area, feeder, substation) must be a
    quasi-identifier, or the check would count together households that the release tells
    apart: refused otherwise, as are k < 2, no or repeated quasi-identifiers, a missing column.
    """
    qis = _check_k_args(households, quasi_identifiers, k)
    return _report(households, qis, k)


def enforce_k_anonymity(
    households: pd.DataFrame,
    quasi_identifiers: Sequence[str] = QUASI_IDENTIFIERS,
    k: int = DEFAULT_K,
    hierarchy: Sequence[Step] = DEFAULT_HIERARCHY,
) -> tuple[pd.DataFrame, KAnonReport]:
    """``households`` generalised along ``hierarchy``, then suppressed, until k-anonymous.

    Each step, in order, generalises the rows whose class is still smaller than k (rows in
    classes of k or more keep their detail; they stay in such classes, since steps only ever
    merge classes of generalised rows). Rows still in a class below k after the last step are
    removed and counted: when every quasi-identifier can climb to ``*`` (the default), those
    rows are all ``*`` alike, one class, so fewer than k rows are suppressed. Other columns and
    the index are kept; the result is k-anonymous or empty. Refused as by :func:`k_anonymity`.
    """
    qis = _check_k_args(households, quasi_identifiers, k)
    out, steps = households.copy(), []
    for step in (s for s in hierarchy if s.column in qis):
        small = _class_sizes(out, qis) < k
        if not small.any():
            break
        out[step.column] = _generalised(out[step.column], small, step.generalise)
        steps.append((step.name, int(small.sum())))
    keep = _class_sizes(out, qis) >= k
    out = out[keep]
    report = _report(out, qis, k)
    return out, replace(report, suppressed=int((~keep).sum()), steps=tuple(steps))


def _check_k_args(frame: pd.DataFrame, quasi_identifiers: Sequence[str], k: int) -> list[str]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise InvalidParameter(f"k must be a whole number >= 2 (default {DEFAULT_K}), not {k!r}")
    qis = [quasi_identifiers] if isinstance(quasi_identifiers, str) else list(quasi_identifiers)
    if not qis or len(set(qis)) != len(qis):
        raise InvalidParameter("name the quasi-identifiers, each once")
    require(frame, qis, "households (coarsen_location adds postcode_area)")
    loose = [c for c in _LOCATION if c in frame.columns and c not in qis]
    if loose:
        raise InvalidData(
            f"households hold location column(s) {', '.join(loose)} outside the quasi-identifiers"
            " (they would single out households the check counts together): drop them or "
            "name them quasi-identifiers"
        )
    return qis


def _classes(
    frame: pd.DataFrame, qis: Sequence[str]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each row's equivalence class on ``qis`` (0, 1, ...; a missing value is a value), and
    each class's size."""
    key = np.zeros(len(frame), dtype=np.int64)
    for column in qis:
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        key = pd.factorize(key * len(uniques) + codes)[0].astype(np.int64)
    return key, np.bincount(key).astype(np.int64)


def _class_sizes(frame: pd.DataFrame, qis: Sequence[str]) -> NDArray[np.int64]:
    key, sizes = _classes(frame, qis)
    return sizes[key]


def _generalised(
    column: pd.Series[Any], rows: NDArray[np.bool_], generalise: Callable[[Any], Hashable]
) -> pd.Series[Any]:
    """``column`` with ``generalise`` applied to ``rows`` (once per distinct value)."""
    values = column.to_numpy(dtype=object, copy=True)
    codes, uniques = pd.factorize(values[rows], use_na_sentinel=False)
    values[rows] = np.array([generalise(u) for u in uniques], dtype=object).take(codes)
    return pd.Series(values.tolist(), index=column.index)


def _report(frame: pd.DataFrame, qis: Sequence[str], k: int) -> KAnonReport:
    _, sizes = _classes(frame, qis)
    below = sizes[sizes < k]
    return KAnonReport(
        k=k,
        quasi_identifiers=tuple(qis),
        rows=len(frame),
        classes=len(sizes),
        smallest_class=int(sizes.min()) if len(sizes) else None,
        classes_below_k=len(below),
        rows_below_k=int(below.sum()),
    )
