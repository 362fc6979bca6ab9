"""One meter's readings of one UTC day as a column block, and its sealed form (C1.7, R1.3).

A day is the unit of storage: one AES-GCM block per meter and day under the customer's data key
(``broker.kit.envelope``), with the meter and the day as associated data, so a block copied to
another meter or day does not open. The plaintext is a small header and one packed record per
reading::

    version (1) | interval_s (uint16 LE) | n (uint16 LE)
    n x { end offset in the day, s (uint32) | register Wh (uint32) | interval Wh (uint32)
          | meter status (uint8) | quality flags (uint8) }          -- little-endian, 14 bytes

A reading belongs to the day in which its interval starts, so the interval ending at midnight
is the last of the day before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

BLOCK_VERSION = 1
DAY_S = 86_400
RECORD = np.dtype(
    [
        ("offset", "<u4"),
        ("register", "<u4"),
        ("value", "<u4"),
        ("status", "u1"),
        ("quality", "u1"),
    ]
)
_HEAD = np.dtype([("version", "u1"), ("interval_s", "<u2"), ("n", "<u2")])


class BlockError(ValueError):
    """A day block's plaintext does not have the documented layout."""


def day_of(end_s: NDArray[np.int64]) -> NDArray[np.int64]:
    """The UTC day (days since 1970-01-01) in which each interval ending at ``end_s`` starts."""
    return np.asarray((end_s - 1) // DAY_S, dtype=np.int64)


@dataclass
class Readings:
    """Readings of one meter, column-wise, sorted by interval end (epoch seconds, UTC)."""

    end_s: NDArray[np.int64]
    register: NDArray[np.int64]
    value: NDArray[np.int64]
    status: NDArray[np.uint8]
    quality: NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.end_s)

    @classmethod
    def empty(cls) -> Readings:
        return cls(
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.uint8),
            np.empty(0, np.uint8),
        )

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_] | slice) -> Readings:
        return Readings(
            self.end_s[index],
            self.register[index],
            self.value[index],
            self.status[index],
            self.quality[index],
        )

    @staticmethod
    def concat(parts: list[Readings]) -> Readings:
        if len(parts) == 1:
            return parts[0]
        return Readings(
            np.concatenate([p.end_s for p in parts]),
            np.concatenate([p.register for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.status for p in parts]),
            np.concatenate([p.quality for p in parts]),
        )


def encode_day(day: int, interval_s: int, readings: Readings) -> bytes:
    """The plaintext of a day block; every reading must fall in ``day``."""
    n = len(readings)
    offsets = readings.end_s - day * DAY_S
    if n == 0 or n > DAY_S or offsets.min() < 1 or offsets.max() > DAY_S:
        raise BlockError(f"{n} readings do not all fall in day {day}")
    return day_header(interval_s, n) + pack_records(offsets, readings)


def pack_records(offsets: NDArray[np.int64], readings: Readings) -> bytes:
    """The packed records of ``readings`` (``offsets``: their ends' seconds into the day)."""
    records = np.empty(len(offsets), RECORD)
    records["offset"] = offsets
    records["register"] = readings.register
    records["value"] = readings.value
    records["status"] = readings.status
    records["quality"] = readings.quality
    return records.tobytes()


def day_header(interval_s: int, n: int) -> bytes:
    """The header of a day block's plaintext."""
    return struct.pack("<BHH", BLOCK_VERSION, interval_s, n)


def decode_day(day: int, plaintext: bytes) -> tuple[int, Readings]:
    """(interval_s, readings) of a day block's plaintext."""
    if len(plaintext) < _HEAD.itemsize:
        raise BlockError("day block shorter than its header")
    head = np.frombuffer(plaintext, _HEAD, count=1)[0]
    n = int(head["n"])
    if int(head["version"]) != BLOCK_VERSION:
        raise BlockError(f"day block version {int(head['version'])} is not {BLOCK_VERSION}")
    if len(plaintext) != _HEAD.itemsize + n * RECORD.itemsize:
        raise BlockError(f"day block of {len(plaintext)} bytes does not hold {n} readings")
    records = np.frombuffer(plaintext, RECORD, count=n, offset=_HEAD.itemsize)
    readings = Readings(
        records["offset"].astype(np.int64) + day * DAY_S,
        records["register"].astype(np.int64),
        records["value"].astype(np.int64),
        records["status"].copy(),
        records["quality"].copy(),
    )
    return int(head["interval_s"]), readings


def block_context(meter_id: str, day: int) -> bytes:
    """Associated data binding a sealed block to its meter and day."""
    return f"reading_day|{meter_id}|{day}".encode()
