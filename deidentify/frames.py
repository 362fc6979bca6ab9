"""The frames the library reads and writes, and the checks every transform starts with.

Readings (one row per meter and interval)::

    meter_id: str            the meter (a personal identifier: it names a household)
    customer_ref: str        optional; the customer (personal)
    start: datetime64[UTC]   interval start
    interval_s: int          interval length in seconds (900 for 15 minutes)
    energy_wh: float         energy imported in the interval, >= 0

Households (one row per meter: the attributes transforms generalise or group by)::

    meter_id, postcode ("SW1A 1AA"), feeder, substation, tariff, has_pv, has_ev,
    and personal fields that never leave beyond the raw tier: name, address, account,
    customer_ref

Column names are constants here so that callers and transforms agree; ``require`` refuses a
frame that lacks any column a transform needs, with their names.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from deidentify.errors import InvalidData, MissingColumns

METER = "meter_id"
CUSTOMER = "customer_ref"
START = "start"
INTERVAL = "interval_s"
ENERGY = "energy_wh"
POSTCODE = "postcode"
FEEDER = "feeder"
SUBSTATION = "substation"
TARIFF = "tariff"
HAS_PV = "has_pv"
HAS_EV = "has_ev"

READING_COLUMNS = (METER, START, INTERVAL, ENERGY)
PERSONAL_FIELDS = ("customer_ref", "meter_id", "name", "address", "account")
"""Fields that identify a person directly; dropped by every tier above raw (pseudonymised keeps
a keyed pseudonym of the meter instead)."""
QUASI_IDENTIFIERS = ("postcode_area", TARIFF, HAS_PV, HAS_EV)
"""The default quasi-identifiers of the k-anonymity check."""
TIERS = ("raw", "pseudonymised", "generalised", "aggregated", "dp")


def require(frame: pd.DataFrame, columns: Iterable[str], what: str = "frame") -> None:
    """Refuse a frame without every one of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns)) or "none"
        raise MissingColumns(f"{what} lacks column(s) {', '.join(missing)} (it has: {have})")


def require_readings(readings: pd.DataFrame) -> None:
    """The checks every transform of readings starts with: columns, types, no negative energy."""
    require(readings, READING_COLUMNS, "readings")
    if not pd.api.types.is_datetime64_any_dtype(readings[START]):
        raise MissingColumns(f"readings column {START} must hold datetimes (UTC)")
    if not pd.api.types.is_numeric_dtype(readings[ENERGY]):
        raise MissingColumns(f"readings column {ENERGY} must be numeric")
    energy = readings[ENERGY]
    if energy.isna().any():
        raise InvalidData(f"readings hold {int(energy.isna().sum())} missing {ENERGY} values")
    if (energy < 0).any():
        raise InvalidData(
            f"readings hold {int((energy < 0).sum())} negative {ENERGY} values "
            "(imports are >= 0; export belongs in another column)"
        )
