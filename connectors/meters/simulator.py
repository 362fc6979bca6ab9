"""Simulated smart meters: the first hop of the reference path (meter → concentrator → MDMS).

The broker's ingest has to be shown working, and attacked, on the protocol real meters speak,
without real meters. A :class:`SimulatedMeter` keeps what a meter keeps (system title, security
suite 0 keys, invocation counter, the +A register) and pushes load-profile DataNotifications in
general-glo-ciphering exactly as ``connectors.dlms`` encodes them; it also takes a global key
transfer from the MDMS. A :class:`Fleet` is N such meters over the household load model, built
from a seed so the same fleet, key file and frames come back every run, and built by meter
number so a million meters can be produced chunk by chunk in bounded memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from connectors.dlms import frames, keytransfer, profile
from connectors.dlms.frames import FrameRejected, Reason
from connectors.dlms.keytransfer import KeyId, KeyTransferError
from connectors.meters.customers import Customer, fake_customer
from connectors.meters.files import (
    read_capture,
    read_customers,
    read_keyfile,
    write_capture,
    write_customers,
    write_keyfile,
)
from connectors.meters.households import TARIFFS, Households, Stream
from connectors.meters.keys import MeterKeys
from connectors.meters.load import DAY_S, LoadModel
from connectors.meters.rng import Streams

__all__ = [
    "Fleet",
    "MeterKeys",
    "SimulatedMeter",
    "read_capture",
    "read_customers",
    "read_keyfile",
    "system_title",
    "write_capture",
    "write_customers",
    "write_keyfile",
]

MANUFACTURER = b"XSM"
MAX_SERIAL = 2**40 - 1
MAX_REGISTER_WH = 2**32 - 1
ACTION_SUCCESS = 0
ACTION_OTHER_REASON = 250  # Action-Result other-reason: the keys did not unwrap
METERS_PER_FEEDER = 150
FEEDERS_PER_DISTRICT = 3
_AREAS = ("AB", "CD", "EF", "GH", "JK", "LM", "NP", "RS", "TU", "WY")

IntArray = NDArray[np.integer[Any]] | Sequence[int]


def system_title(serial: int) -> bytes:
    """The 8-byte system title: manufacturer id ``XSM`` and a 5-byte serial, big-endian."""
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial {serial} does not fit in 5 bytes")
    return MANUFACTURER + serial.to_bytes(5, "big")


@dataclass(slots=True, eq=False)
class SimulatedMeter:
    """One meter: what it stores, what it pushes, and its side of a key transfer."""

    system_title: bytes
    keys: MeterKeys
    register_wh: int  # the +A register (1.0.1.8.0.255) now
    interval_s: int = 900
    invocation_counter: int = 1  # the counter the next frame carries
    customer_ref: str = ""
    feeder: str = ""
    postcode: str = ""
    tariff: str = "standard"
    has_pv: bool = False
    has_ev: bool = False
    index: int = 0  # meter number in its fleet
    seed: int = 0  # the fleet's seed
    _peer_counters: dict[bytes, int] = field(default_factory=dict, repr=False)

    def customer(self) -> Customer:
        """The synthetic customer this meter belongs to (deterministic from seed and number)."""
        return fake_customer(self.seed, self.index, self.customer_ref, self.postcode)

    def push(self, end_s: IntArray, interval_wh: IntArray, status: IntArray | None = None) -> bytes:
        """Push 1..1440 intervals (ends in epoch seconds, UTC): the register advances by each."""
        wh = interval_values(interval_wh)
        registers = self.registers_after(wh)
        frame = self.send_profile(end_s, registers, wh, status)
        self.register_wh = int(registers[-1])
        return frame

    def registers_after(self, interval_wh: NDArray[np.uint32]) -> NDArray[np.uint32]:
        """The register at the end of each interval, starting from the register now."""
        running = self.register_wh + np.cumsum(interval_wh, dtype=np.int64)
        if len(running) and running[-1] > MAX_REGISTER_WH:
            raise ValueError("the +A register would pass 2^32 - 1 Wh")
        return running.astype(np.uint32)

    def send_profile(
        self,
        end_s: IntArray,
        register_wh: NDArray[np.uint32],
        interval_wh: NDArray[np.uint32],
        status: IntArray | None = None,
    ) -> bytes:
        """Seal a profile exactly as given, with the next counter (the register is not moved).

        This is the meter's storage talking: :meth:`push` calls it with consistent values,
        ``attacks.tampered_profile`` with an altered profile.
        """
        apdu = profile_notification(
            self.system_title, end_s, register_wh, interval_wh, status, self.invocation_counter
        )
        return self.seal(apdu)

    def seal(self, apdu: bytes) -> bytes:
        """Wrap ``apdu`` in general-glo-ciphering under the current keys; the counter advances."""
        ic = self.invocation_counter
        if ic > frames.MAX_INVOCATION_COUNTER:
            raise RuntimeError(f"meter {self.system_title.hex()}: invocation counter exhausted")
        frame = frames.seal(
            self.system_title, ic, self.keys.encryption_key, self.keys.authentication_key, apdu
        )
        self.invocation_counter = ic + 1
        return frame

    def handle(self, request_frame: bytes, sender_title: bytes) -> bytes:
        """Take a global key transfer; answer under the current keys, then switch to the new.

        Raises :class:`FrameRejected` (and answers nothing) when the request is not from
        ``sender_title``, is not newer than the last request from it (``REPLAY``), or does not
        verify under the current keys (``BAD_TAG``). Keys that do not unwrap under the master
        key get an ACTION-response with result 250 (other-reason), and the keys stay.
        """
        apdu = self._open_request(request_frame, sender_title)
        invoke_id, parameter = keytransfer.parse_action_request(apdu)
        try:
            new_keys = keytransfer.unwrap_key_data(self.keys.master_key, parameter)
        except KeyTransferError:
            return self.seal(keytransfer.action_response(invoke_id, ACTION_OTHER_REASON))
        response = self.seal(keytransfer.action_response(invoke_id, ACTION_SUCCESS))
        self.keys = _with_new_keys(self.keys, new_keys)
        return response

    def _open_request(self, request_frame: bytes, sender_title: bytes) -> bytes:
        ciphered = frames.parse_ciphered(request_frame)
        if ciphered.system_title != sender_title:
            raise FrameRejected(Reason.MALFORMED, "request's system title is not the sender's")
        last = self._peer_counters.get(sender_title, -1)
        if ciphered.invocation_counter <= last:
            raise FrameRejected(
                Reason.REPLAY, f"counter {ciphered.invocation_counter} is not above {last}"
            )
        keys = self.keys
        apdu = frames.open_ciphered(ciphered, keys.encryption_key, keys.authentication_key)
        self._peer_counters[sender_title] = ciphered.invocation_counter
        return apdu


def _with_new_keys(keys: MeterKeys, new: dict[KeyId, bytes]) -> MeterKeys:
    """The keys after a transfer (a broadcast key is accepted but not used by these meters)."""
    return replace(
        keys,
        encryption_key=new.get(KeyId.GLOBAL_UNICAST_ENCRYPTION, keys.encryption_key),
        authentication_key=new.get(KeyId.AUTHENTICATION, keys.authentication_key),
        master_key=new.get(KeyId.MASTER, keys.master_key),
    )


def profile_notification(
    title: bytes,
    end_s: IntArray,
    register_wh: NDArray[np.uint32],
    interval_wh: NDArray[np.uint32],
    status: IntArray | None = None,
    invoke_id: int = 0,
) -> bytes:
    """The plain DataNotification APDU of a load profile (what gets sealed)."""
    ends = interval_ends(end_s, len(interval_wh))
    flags = np.zeros(len(ends), np.uint8) if status is None else np.asarray(status, np.uint8)
    body = profile.encode_body(title, ends, flags, register_wh, interval_wh)
    return frames.data_notification(body, invoke_id & 0xFFFFFF)


def interval_values(interval_wh: IntArray) -> NDArray[np.uint32]:
    """Interval energies as uint32, refusing negative or oversized values and wrong shapes."""
    raw = np.asarray(interval_wh)
    if raw.ndim != 1 or not 1 <= len(raw) <= profile.MAX_ENTRIES:
        raise ValueError(f"a push carries 1 to {profile.MAX_ENTRIES} intervals")
    if raw.dtype == np.uint32:
        return raw  # the load model's own output: in range by its type
    if raw.dtype.kind not in "iu" or raw.min() < 0 or raw.max() > MAX_REGISTER_WH:
        raise ValueError("interval energies are whole Wh from 0 to 2^32 - 1")
    return raw.astype(np.uint32)


def interval_ends(end_s: IntArray, count: int) -> NDArray[np.int64]:
    """Interval ends in epoch seconds: one per interval, strictly increasing."""
    ends = np.asarray(end_s, dtype=np.int64)
    if ends.shape != (count,):
        raise ValueError(f"{ends.size} interval ends for {count} intervals")
    if (np.diff(ends) <= 0).any():
        raise ValueError("interval ends must strictly increase")
    return ends


def epoch_s(start: dt.datetime | dt.date) -> int:
    """Epoch seconds of an aware datetime, or of a date's midnight UTC."""
    if not isinstance(start, dt.datetime):
        start = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
    if start.tzinfo is None:
        raise ValueError("use an aware datetime (UTC)")
    return int(start.timestamp())


@dataclass(frozen=True, slots=True)
class Fleet:
    """Meters ``first`` .. ``first + len - 1`` of the fleet seeded with ``seed``.

    Meter number i is the same (title, keys, household, customer) in every fleet of the same
    seed that contains it, so ``Fleet.chunks`` yields a large fleet piece by piece.
    """

    seed: int
    interval_s: int
    meters: list[SimulatedMeter]
    households: Households
    model: LoadModel

    @classmethod
    def create(cls, meters: int, seed: int, interval_s: int = 900, *, first: int = 0) -> Fleet:
        """``meters`` meters from number ``first`` on; keys and households from the seed."""
        if meters < 1 or first < 0 or first + meters > MAX_SERIAL:
            raise ValueError("a fleet of 1 or more meters, numbered 0 .. 2^40 - 2")
        model = LoadModel(seed)
        index = np.arange(first, first + meters, dtype=np.int64)
        households = model.households(index)
        registers = _initial_registers(seed, index)
        made = [
            _meter(seed, households, row, int(registers[row]), interval_s) for row in range(meters)
        ]
        return cls(seed, interval_s, made, households, model)

    @classmethod
    def chunks(
        cls, meters: int, seed: int, chunk: int = 10_000, interval_s: int = 900
    ) -> Iterator[Fleet]:
        """The fleet of ``meters`` meters as consecutive fleets of at most ``chunk`` meters."""
        for first in range(0, meters, chunk):
            yield cls.create(min(chunk, meters - first), seed, interval_s, first=first)

    def __len__(self) -> int:
        return len(self.meters)

    def by_title(self) -> dict[bytes, SimulatedMeter]:
        """The meters by system title."""
        return {m.system_title: m for m in self.meters}

    def energy_wh(self, start_s: int, count: int) -> NDArray[np.uint32]:
        """(meters, count) Wh of the intervals from ``start_s``; no meter state changes."""
        return self.model.energy_wh(self.households, start_s, count, self.interval_s)

    def frames(
        self, start: dt.datetime | dt.date, days: int = 1, push_intervals: int = 96
    ) -> Iterator[tuple[SimulatedMeter, bytes]]:
        """Every meter's pushes from ``start``, in time order: one push slot of all meters, then
        the next. A push carries ``push_intervals`` intervals (a divisor of a day's count)."""
        start_s, per_day = epoch_s(start), DAY_S // self.interval_s
        if start_s % self.interval_s or per_day % push_intervals:
            raise ValueError(
                f"start on a {self.interval_s} s boundary; push_intervals must divide {per_day}"
            )
        for day in range(days):
            day_s = start_s + day * DAY_S
            wh = self.energy_wh(day_s, per_day)
            ends = day_s + self.interval_s * np.arange(1, per_day + 1, dtype=np.int64)
            for lo in range(0, per_day, push_intervals):
                hi = lo + push_intervals
                for row, meter in enumerate(self.meters):
                    yield meter, meter.push(ends[lo:hi], wh[row, lo:hi])

    def day_frames(
        self, day: dt.date, push_intervals: int = 96
    ) -> Iterator[tuple[SimulatedMeter, bytes]]:
        """One day's pushes of this fleet (a benchmark runs it per chunk of a large fleet)."""
        return self.frames(day, 1, push_intervals)


def _initial_registers(seed: int, index: NDArray[np.int64]) -> NDArray[np.int64]:
    """A register reading of 0.5 to 12 years at 2,000 to 5,000 kWh a year, in Wh."""
    u = Streams(seed).uniform(index, 0, Stream.REGISTER, 2)
    years = 0.5 + 11.5 * u[:, 0]
    kwh_a_year = 2000.0 + 3000.0 * u[:, 1]
    return np.rint(years * kwh_a_year * 1000.0).astype(np.int64)


def _meter(
    seed: int, households: Households, row: int, register_wh: int, interval_s: int
) -> SimulatedMeter:
    index = int(households.index[row])
    feeder = index // METERS_PER_FEEDER
    district = feeder // FEEDERS_PER_DISTRICT
    return SimulatedMeter(
        system_title=system_title(index + 1),
        keys=MeterKeys.derive(seed, index),
        register_wh=register_wh,
        interval_s=interval_s,
        customer_ref=f"CUST-{index + 1:07d}",
        feeder=f"F-{feeder + 1:03d}",
        postcode=f"{_AREAS[district // 20 % len(_AREAS)]}{district % 20 + 1}",
        tariff=TARIFFS[int(households.tariff[row])],
        has_pv=bool(households.has_pv[row]),
        has_ev=bool(households.has_ev[row]),
        index=index,
        seed=seed,
    )
