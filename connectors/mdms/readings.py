"""Reading stored days back: each block opened under its customer's data key (C1.7).

This is the MDMS's own read path (operators, tests, and later the broker's consent-scoped
repository). A block whose data key was destroyed (the customer was erased) raises
``KeyDestroyed``; a block moved to another meter or day fails to open.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from broker.keys.service import DataKeys
from broker.storage.raw import Raw
from connectors.mdms.block import Readings, block_context, decode_day
from connectors.mdms.models import ReadingDay


@dataclass(frozen=True)
class StoredDay:
    meter_id: str
    day: int
    interval_s: int
    readings: Readings


def read_days(
    session: Session, data_keys: DataKeys, meter_id: str, first_day: int, last_day: int
) -> list[StoredDay]:
    """The stored days of ``meter_id`` from ``first_day`` to ``last_day``, opened."""
    query = (
        select(ReadingDay)
        .where(
            ReadingDay.meter_id == meter_id,
            col(ReadingDay.day) >= first_day,
            col(ReadingDay.day) <= last_day,
        )
        .order_by(col(ReadingDay.day))
    )
    rows = list(session.exec(query))
    ring = data_keys.keyring(session)
    out: list[StoredDay] = []
    for row in rows:
        plain = ring.open(row.sealed, block_context(meter_id, row.day))
        interval_s, readings = decode_day(row.day, plain)
        out.append(StoredDay(meter_id, row.day, interval_s, readings))
    return out


def fetch_sealed_days(raw: Raw, keys: list[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
    """The sealed blocks stored for ``keys`` (meter, day), in one lookup per chunk of meters."""
    wanted = set(keys)
    found: dict[tuple[str, int], bytes] = {}
    statement = "SELECT meter_id, day, sealed FROM reading_day WHERE meter_id IN {in}"
    lo, hi = min(k[1] for k in keys), max(k[1] for k in keys)
    statement += f" AND day BETWEEN {lo:d} AND {hi:d}"
    for meter_id, day, sealed in raw.query_in(statement, sorted({k[0] for k in keys})):
        if (meter_id, day) in wanted:
            found[(meter_id, day)] = bytes(sealed)
    return found
