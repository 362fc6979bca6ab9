"""A minimal meter for MDMS tests: exact control over counters, values and keys.

The full household simulator lives in ``connectors.meters``; these tests need frames whose
every field they choose (a counter to replay, a value to tamper with), so they build them here
from the same codec.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from connectors.dlms import frames, profile
from connectors.mdms.keyfile import MeterKeyRow
from connectors.meters.simulator import SimulatedMeter

DAY0 = 1_793_491_200  # 2026-11-01T00:00:00Z
DAY0_NO = DAY0 // 86_400
BLUE_BOOK_EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
BLUE_BOOK_AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")


@dataclass
class TestMeter:
    serial: int
    ek: bytes = field(default_factory=lambda: os.urandom(16))
    ak: bytes = field(default_factory=lambda: os.urandom(16))
    mk: bytes | None = field(default_factory=lambda: os.urandom(16))
    ic: int = 0
    register: int = 50_000
    interval_s: int = 900
    manufacturer: bytes = b"XSM"

    __test__ = False  # not a pytest class

    @property
    def title(self) -> bytes:
        return self.manufacturer + self.serial.to_bytes(5, "big")

    @property
    def meter_id(self) -> str:
        return self.title.hex().upper()

    @property
    def customer(self) -> str:
        return f"CUST-{self.serial:06d}"

    @property
    def feeder(self) -> str:
        return f"F-{self.serial % 3:03d}"

    def ends(self, day: int, first: int = 0, count: int | None = None) -> np.ndarray:
        per_day = 86_400 // self.interval_s
        count = per_day - first if count is None else count
        slots = np.arange(first + 1, first + count + 1, dtype=np.int64)
        return DAY0 + day * 86_400 + slots * self.interval_s

    def readings(
        self, ends: np.ndarray, values: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(register, values) for ``ends``, advancing the meter's register."""
        if values is None:
            values = (100 + (ends // self.interval_s) % 7 * 40).astype(np.int64)
        registers = self.register + np.cumsum(values)
        self.register = int(registers[-1])
        return registers, values

    def frame(
        self,
        ends: np.ndarray,
        registers: np.ndarray,
        values: np.ndarray,
        status: np.ndarray | None = None,
        *,
        ic: int | None = None,
        keys: tuple[bytes, bytes] | None = None,
        body_title: bytes | None = None,
    ) -> bytes:
        if ic is None:
            self.ic += 1
            ic = self.ic
        status = np.zeros(len(ends), np.uint8) if status is None else status
        body = profile.encode_body(body_title or self.title, ends, status, registers, values)
        ek, ak = keys or (self.ek, self.ak)
        return frames.seal(self.title, ic, ek, ak, frames.data_notification(body))

    def push_day(self, day: int, first: int = 0, count: int | None = None) -> bytes:
        ends = self.ends(day, first, count)
        registers, values = self.readings(ends)
        return self.frame(ends, registers, values)


def key_rows(meters: Sequence[SimulatedMeter], master: bool = True) -> list[MeterKeyRow]:
    """Key-file rows of simulated meters (lines from 2, as in a file), with or without their
    master key."""
    return [
        MeterKeyRow(
            line,
            m.system_title.hex().upper(),
            m.keys.encryption_key,
            m.keys.authentication_key,
            m.keys.master_key if master else None,
            m.customer_ref,
            m.feeder,
            m.postcode,
            m.interval_s,
        )
        for line, m in enumerate(meters, start=2)
    ]
