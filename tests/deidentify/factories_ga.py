"""Frames of realistic households and readings, from the project's simulated fleet.

The households carry the synthetic customers' personal fields (obviously fake names, addresses,
accounts), a full UK-shaped postcode (the fleet's district and the address's inward code), a
feeder and its substation (four feeders each), and the load model's tariff, PV and EV; the
readings are the load model's Wh per interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from connectors.meters.simulator import Fleet

START = pd.Timestamp("2026-01-31", tz="UTC")
FEEDERS_PER_SUBSTATION = 4


def households(n: int = 300, seed: int = 11) -> pd.DataFrame:
    """One row per meter: identifiers, personal fields, location and the quasi-identifiers."""
    rows = []
    for meter in Fleet.create(n, seed).meters:
        customer = meter.customer()
        feeder = int(meter.feeder.removeprefix("F-"))
        rows.append(
            {
                "meter_id": meter.system_title.hex().upper(),
                "customer_ref": meter.customer_ref,
                "name": customer.name,
                "address": customer.address,
                "account": customer.account_number,
                "postcode": f"{meter.postcode} {customer.address.rsplit(' ', 1)[-1]}",
                "feeder": meter.feeder,
                "substation": f"S-{(feeder - 1) // FEEDERS_PER_SUBSTATION + 1:02d}",
                "tariff": meter.tariff,
                "has_pv": meter.has_pv,
                "has_ev": meter.has_ev,
            }
        )
    return pd.DataFrame(rows)


def readings(
    n: int = 20,
    intervals: int = 192,
    interval_s: int = 900,
    start: pd.Timestamp = START,
    seed: int = 11,
) -> pd.DataFrame:
    """``intervals`` readings of ``interval_s`` for each of ``n`` meters from ``start``."""
    fleet = Fleet.create(n, seed, interval_s)
    wh = fleet.energy_wh(int(start.timestamp()), intervals)
    starts = pd.date_range(start, periods=intervals, freq=pd.Timedelta(seconds=interval_s))
    return pd.DataFrame(
        {
            "meter_id": np.repeat([m.system_title.hex().upper() for m in fleet.meters], intervals),
            "customer_ref": np.repeat([m.customer_ref for m in fleet.meters], intervals),
            "start": starts[np.tile(np.arange(intervals), n)],
            "interval_s": interval_s,
            "energy_wh": wh.reshape(-1).astype(np.int64),
        }
    )
