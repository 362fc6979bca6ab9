"""Simulated meters and fleets: every push reads back as exactly what the meter measured."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import pytest

from connectors.dlms import frames, profile
from connectors.meters.keys import MeterKeys
from connectors.meters.simulator import Fleet, SimulatedMeter, system_title
from tests.connectors.meters.helpers import (
    MONDAY,
    SEED,
    counter,
    day_s,
    open_profile,
    quarter_hours,
)


def decoded_by_meter(
    pushed: list[tuple[SimulatedMeter, bytes]],
) -> dict[bytes, list[profile.Profile]]:
    out: dict[bytes, list[profile.Profile]] = defaultdict(list)
    for meter, frame in pushed:
        out[meter.system_title].append(open_profile(frame, meter.keys))
    return out


def test_C1_5_every_frame_decodes_to_exactly_the_readings_pushed() -> None:
    fleet = Fleet.create(5, SEED)
    registers = [m.register_wh for m in fleet.meters]
    expected = Fleet.create(5, SEED).energy_wh(day_s(MONDAY), 2 * 96)
    decoded = decoded_by_meter(list(fleet.frames(MONDAY, days=2, push_intervals=24)))
    for row, meter in enumerate(fleet.meters):
        pushes = decoded[meter.system_title]
        assert len(pushes) == 8
        assert all(p.system_title == meter.system_title for p in pushes)
        wh = np.concatenate([p.interval_wh for p in pushes])
        assert np.array_equal(wh, expected[row])
        ends = np.concatenate([p.end_s for p in pushes])
        assert np.array_equal(ends, quarter_hours(day_s(MONDAY), 2 * 96))
        reg = np.concatenate([p.register_wh for p in pushes]).astype(np.int64)
        assert np.array_equal(reg, registers[row] + np.cumsum(expected[row], dtype=np.int64))
        assert meter.register_wh == int(reg[-1])


def test_register_entries_are_the_running_sum_of_the_intervals() -> None:
    meter = Fleet.create(1, SEED).meters[0]
    start = meter.register_wh
    read = open_profile(meter.push(quarter_hours(day_s(MONDAY), 4), [10, 0, 250, 7]), meter.keys)
    assert read.register_wh.tolist() == [start + 10, start + 10, start + 260, start + 267]
    assert read.interval_wh.tolist() == [10, 0, 250, 7]
    assert meter.register_wh == start + 267


def test_counters_start_at_1_and_strictly_increase_per_meter() -> None:
    fleet = Fleet.create(4, SEED)
    seen: dict[bytes, list[int]] = defaultdict(list)
    for meter, frame in fleet.frames(MONDAY, days=1, push_intervals=8):
        seen[meter.system_title].append(counter(frame))
    assert all(counters == list(range(1, 13)) for counters in seen.values())
    assert all(m.invocation_counter == 13 for m in fleet.meters)


def test_frames_come_one_push_slot_of_all_meters_at_a_time() -> None:
    fleet = Fleet.create(3, SEED)
    pushed = list(fleet.frames(MONDAY, days=1, push_intervals=48))
    titles = [m.system_title for m, _ in pushed]
    assert titles == [m.system_title for m in fleet.meters] * 2
    first_ends = [open_profile(f, m.keys).end_s[0] for m, f in pushed]
    assert first_ends == sorted(first_ends)
    assert first_ends[0] < first_ends[-1]


def test_a_frame_is_general_glo_ciphering_suite_0_with_the_meters_title_and_iv() -> None:
    meter = Fleet.create(1, SEED).meters[0]
    frame = meter.push(quarter_hours(day_s(MONDAY), 1), [42])
    ciphered = frames.parse_ciphered(frame)
    assert frame[0] == frames.TAG_GENERAL_GLO_CIPHERING
    assert ciphered.system_title == meter.system_title
    assert ciphered.security_control == 0x30
    assert ciphered.invocation_counter == 1
    apdu = frames.open_ciphered(ciphered, meter.keys.encryption_key, meter.keys.authentication_key)
    assert apdu[0] == frames.TAG_DATA_NOTIFICATION
    assert b"\x09\x06" + profile.PROFILE_OBIS in apdu


@pytest.mark.parametrize("count", [1, 96, 288, profile.MAX_ENTRIES])
def test_a_push_carries_one_interval_up_to_a_day(count: int) -> None:
    meter = SimulatedMeter(system_title(7), MeterKeys.derive(1, 7), 5_000_000, interval_s=60)
    ends = day_s(MONDAY) + 60 * np.arange(1, count + 1)
    read = open_profile(meter.push(ends, np.full(count, 3, np.uint32)), meter.keys)
    assert len(read) == count
    assert read.end_s.tolist() == ends.tolist()


@pytest.mark.parametrize(
    ("ends", "wh"),
    [
        ([900, 1800], [1]),
        ([1800, 900], [1, 1]),
        ([900, 900], [1, 1]),
        ([900], [-1]),
        ([900], [2**32]),
        ([], []),
        (list(range(900, 900 * 1442, 900)), [1] * 1441),
    ],
)
def test_a_push_refuses_what_a_meter_cannot_have_measured(ends: list[int], wh: list[int]) -> None:
    meter = SimulatedMeter(system_title(1), MeterKeys.derive(1, 1), 1000)
    with pytest.raises(ValueError, match=r"interval|Wh"):
        meter.push(ends, wh)
    assert meter.invocation_counter == 1
    assert meter.register_wh == 1000


@pytest.mark.parametrize(("interval_s", "push_intervals"), [(300, 288), (1800, 1), (3600, 24)])
def test_intervals_of_5_30_and_60_minutes_are_selectable(
    interval_s: int, push_intervals: int
) -> None:
    fleet = Fleet.create(2, SEED, interval_s=interval_s)
    pushed = list(fleet.frames(MONDAY, days=1, push_intervals=push_intervals))
    assert len(pushed) == 2 * (86400 // interval_s // push_intervals)
    read = open_profile(pushed[-1][1], pushed[-1][0].keys)
    assert np.all(np.diff(read.end_s) == interval_s)
    assert read.end_s[-1] == day_s(MONDAY) + 86400


@pytest.mark.parametrize(
    ("start", "push_intervals"),
    [
        (MONDAY, 7),
        (dt.datetime(2025, 3, 3, 0, 5, tzinfo=dt.UTC), 96),
        (dt.datetime(2025, 3, 3), 96),
    ],
)
def test_frames_refuse_a_misaligned_start_or_push_size(start: dt.date, push_intervals: int) -> None:
    with pytest.raises(ValueError, match=r"boundary|aware"):
        next(Fleet.create(1, SEED).frames(start, 1, push_intervals))


def test_meters_carry_their_identity_from_the_seed() -> None:
    meter = Fleet.create(3, SEED, first=41).meters[0]
    assert meter.system_title == b"XSM" + (42).to_bytes(5, "big")
    assert meter.customer_ref == "CUST-0000042"
    assert meter.feeder == "F-001"
    assert meter.postcode == "AB1"
    assert meter.tariff in {"standard", "economy7", "time-of-use", "ev-night"}
    assert meter.keys == MeterKeys.derive(SEED, 41)
    assert meter.keys != MeterKeys.derive(SEED + 1, 41)
    assert len({m.keys.encryption_key for m in Fleet.create(50, SEED).meters}) == 50


def test_initial_registers_are_seeded_and_realistic() -> None:
    registers = [m.register_wh for m in Fleet.create(200, SEED).meters]
    assert registers == [m.register_wh for m in Fleet.create(200, SEED).meters]
    assert len(set(registers)) == 200
    assert min(registers) >= 1_000_000 and max(registers) <= 60_000_000


def test_a_chunked_fleet_is_the_same_fleet() -> None:
    whole = Fleet.create(7, SEED)
    chunks = list(Fleet.chunks(7, SEED, chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    meters = [m for c in chunks for m in c.meters]
    for a, b in zip(whole.meters, meters, strict=True):
        assert (a.system_title, a.keys, a.register_wh) == (b.system_title, b.keys, b.register_wh)
        assert (a.tariff, a.has_pv, a.has_ev, a.feeder) == (b.tariff, b.has_pv, b.has_ev, b.feeder)


def test_a_days_frames_of_the_chunks_are_the_frames_of_the_whole_fleet() -> None:
    whole = [frame for _, frame in Fleet.create(5, SEED).day_frames(MONDAY)]
    chunked = [frame for c in Fleet.chunks(5, SEED, chunk=2) for _, frame in c.day_frames(MONDAY)]
    assert chunked == whole
    assert len(set(whole)) == 5


def test_pv_and_ev_meters_exist_in_a_fleet() -> None:
    fleet = Fleet.create(300, SEED)
    assert any(m.has_pv for m in fleet.meters)
    assert any(m.has_ev for m in fleet.meters)
    assert all(m.tariff == "ev-night" for m in fleet.meters if m.has_ev and m.tariff != "standard")
    assert fleet.by_title()[fleet.meters[9].system_title] is fleet.meters[9]
