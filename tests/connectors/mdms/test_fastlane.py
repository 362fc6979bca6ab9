"""The ingest fast lane gives exactly the answers, counts and day blocks of the general path
(C1.5, C1.7, T3).

Every test builds one sequence of batches, runs it through a pipeline with the fast lane and
through one without (``lanes.Lanes``: the same database, emptied in between) and compares
every frame's answer, each batch's counts, the meter and day rows and the opened day blocks.
Each test also checks how many frames the fast lane placed, so that a change that quietly sends
everything down the general path is caught as well.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.storage.db import Database
from connectors.mdms.keyfile import MeterKeyRow
from connectors.mdms.vee import VeeLimits
from connectors.meters import attacks
from connectors.meters.simulator import Fleet, SimulatedMeter
from tests.connectors.mdms.factory import DAY0, key_rows
from tests.connectors.mdms.lanes import Lanes, Seen, assert_same

SEED = 20261101
START = dt.datetime.fromtimestamp(DAY0, dt.UTC)
DAY_S = 86_400
PER_DAY = 96


@pytest.fixture
def lanes(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lanes:
    """Both paths, their clock on day 6 after ``START`` (every frame here is at most 6 days
    old and none is in the future)."""
    return Lanes(database, tmp_path, monkeypatch, START + dt.timedelta(days=6))


def batches_of(stream: Iterator[tuple[SimulatedMeter, bytes]], size: int) -> list[list[bytes]]:
    frames = [f for _m, f in stream]
    return [frames[i : i + size] for i in range(0, len(frames), size)]


def ends_of(day: int, first: int = 0, count: int = PER_DAY, interval_s: int = 900) -> np.ndarray:
    return DAY0 + day * DAY_S + interval_s * np.arange(first + 1, first + count + 1)


def day_wh(fleet: Fleet, day: int) -> np.ndarray:
    """(meters, 96) Wh of ``day`` (days after ``START``) from the fleet's load model."""
    return fleet.energy_wh(DAY0 + day * DAY_S, PER_DAY)


def compare(lanes: Lanes, rows: Sequence[MeterKeyRow], batches: list[list[bytes]]) -> Seen:
    fast, general = lanes.both(rows, batches)
    assert_same(fast, general)
    return fast


# ---- simulated fleets ---------------------------------------------------------------------


def test_C1_5_daily_pushes_of_a_fleet_over_four_days_agree_and_all_take_the_fast_lane(
    lanes: Lanes,
) -> None:
    fleet = Fleet.create(12, SEED)
    batches = batches_of(fleet.frames(START, days=4), size=12)  # one batch a day
    seen = compare(lanes, key_rows(fleet.meters), batches)
    assert seen.outcomes() == {"accepted": 48}
    assert seen.fast_frames == 48  # first pushes (no previous reading) and next pushes
    assert len(seen.blocks) == 48 and all(len(b[1]) == PER_DAY for b in seen.blocks.values())


def test_C1_5_hourly_pushes_agree_where_only_each_day_s_first_push_is_fast(lanes: Lanes) -> None:
    fleet = Fleet.create(5, SEED)
    batches = batches_of(fleet.frames(START, days=2, push_intervals=4), size=7)
    seen = compare(lanes, key_rows(fleet.meters), batches)
    assert seen.outcomes() == {"accepted": 5 * 24 * 2}
    # Only the first push into a day can be fast (the rest merges into a stored block), and
    # only for a meter with no other frame in the batch: meters 2-4 on day 0 (batch 0 also
    # holds the second pushes of meters 0 and 1), meters 1-3 on day 1 (batch 17 runs from
    # meter 4's last push of day 0 to meter 0's second push of day 1).
    assert seen.fast_frames == 3 + 3
    assert len(seen.blocks) == 10 and all(len(b[1]) == PER_DAY for b in seen.blocks.values())


def test_C1_5_meters_of_different_intervals_in_one_batch_agree(lanes: Lanes) -> None:
    fleets = [
        Fleet.create(4, SEED),
        Fleet.create(3, SEED, interval_s=300, first=4),
        Fleet.create(3, SEED, interval_s=1800, first=7),
    ]
    days: list[list[bytes]] = [[], []]
    for fleet in fleets:
        for d, batch in enumerate(days):
            start = START + dt.timedelta(days=d)
            batch += [f for _m, f in fleet.frames(start, 1, DAY_S // fleet.interval_s)]
    seen = compare(lanes, key_rows([m for f in fleets for m in f.meters]), days)
    assert seen.outcomes() == {"accepted": 20} and seen.fast_frames == 20
    assert {b[0] for b in seen.blocks.values()} == {300, 900, 1800}


def test_T3_tampered_profiles_spikes_and_status_bits_are_flagged_alike(lanes: Lanes) -> None:
    fleet = Fleet.create(8, SEED)
    m = fleet.meters
    batches = batches_of(fleet.frames(START, days=1), size=8)
    ends, wh = ends_of(1), day_wh(fleet, 1)
    day1 = [attacks.tampered_profile(m[0], ends, wh[0])]  # T3: the peak quarter lowered
    peak = int(np.argmax(wh[1]))
    day1.append(attacks.tampered_profile(m[1], ends, wh[1], lowered=[peak], factor=0.0))
    spiky = wh[2].astype(np.int64)
    spiky[[5, 50]] = 9_000  # 36 kW over a quarter hour: above the 30 kW limit
    day1.append(m[2].push(ends, spiky))
    status = np.zeros(PER_DAY, np.uint8)
    status[[0, 95]] = 0x08  # power failure
    day1.append(m[3].push(ends, wh[3], status))
    backwards = m[4].registers_after(wh[4]).astype(np.int64)
    backwards[10:] -= 5_000  # the register jumps back
    day1.append(m[4].send_profile(ends, backwards.astype(np.uint32), wh[4]))
    day1 += [meter.push(ends, wh[i]) for i, meter in enumerate(m[5:], start=5)]
    seen = compare(lanes, key_rows(m), [*batches, day1])
    flags = [set(a[4]) for a in seen.answers[1]]
    assert flags[0] == flags[1] == {"unreconciled"}
    assert flags[2] == {"spike"}  # the register counted it: a real, implausible load
    assert flags[3] == {"meter_status"}
    assert flags[4] == {"negative_delta", "unreconciled"}
    assert flags[5:] == [set(), set(), set()]
    assert seen.fast_frames == 16


def test_C1_5_the_first_push_of_a_meter_agrees_whatever_its_shape(lanes: Lanes) -> None:
    """No previous reading: a whole day, one interval, a few, a push ending at midnight."""
    fleet = Fleet.create(5, SEED)
    m, wh = fleet.meters, day_wh(fleet, 2)
    batch = [
        m[0].push(ends_of(2), wh[0]),
        m[1].push(ends_of(2, 40, 1), wh[1, 40:41]),  # one interval (the interval is provisioned)
        m[2].push(ends_of(2, 90, 6), wh[2, 90:]),  # the last ends at midnight, still day 2
        m[3].push(ends_of(2, 0, 2), wh[3, :2]),
        m[4].push(ends_of(2, 94, 4), np.concatenate([wh[4, 94:], wh[4, :2]])),  # two days
    ]
    seen = compare(lanes, key_rows(m), [batch])
    assert seen.outcomes() == {"accepted": 5}
    assert seen.fast_frames == 4  # a push across midnight takes the long way


def test_C1_5_gaps_between_and_inside_pushes_are_estimated_alike(lanes: Lanes) -> None:
    fleet = Fleet.create(4, SEED)
    m = fleet.meters
    first = batches_of(fleet.frames(START, days=1), size=4)
    wh1, wh2 = day_wh(fleet, 1), day_wh(fleet, 2)
    m[0].register_wh += int(wh1[0].sum())  # day 1 is never sent by meters 0 and 1
    m[1].register_wh += int(wh1[1].sum() + wh2[1, :8].sum())
    registers = m[3].registers_after(wh1[3])
    holes = np.r_[0:30, 40:96]  # ten quarter hours missing inside meter 3's next push
    later = [
        m[0].push(ends_of(2), wh2[0]),  # a day missing before the push: 96 estimates
        m[1].push(ends_of(2, 8, 88), wh2[1, 8:]),  # and two hours more: 104
        m[2].push(ends_of(1), wh1[2]),  # the next push: fast
        m[3].send_profile(ends_of(1)[holes], registers[holes], wh1[3, holes]),
    ]
    seen = compare(lanes, key_rows(m), [*first, later])
    assert seen.totals[1][1] == 96 + 104 + 10
    assert seen.fast_frames == 4 + 1  # meter 3 passes the per-frame test, not the array one
    assert seen.answers[1][3][:2] == ("accepted", None)


def test_C1_5_a_gap_longer_than_the_limit_is_left_open_alike(lanes: Lanes) -> None:
    fleet = Fleet.create(2, SEED)
    m = fleet.meters
    first = batches_of(fleet.frames(START, days=1), size=2)
    later = [m[0].push(ends_of(3), day_wh(fleet, 3)[0]), m[1].push(ends_of(1), day_wh(fleet, 1)[1])]
    fast, general = lanes.both(key_rows(m), [*first, later], VeeLimits(max_gap_s=DAY_S))
    assert_same(fast, general)
    assert "gap_before" in fast.answers[1][0][4] and fast.totals[1][1] == 0


def test_C1_5_a_mixed_batch_agrees_and_only_the_eligible_meters_take_the_fast_lane(
    lanes: Lanes,
) -> None:
    """One batch holding every reason to leave the fast lane, beside meters that take it."""
    fleet = Fleet.create(10, SEED)
    m = fleet.meters
    day0 = batches_of(fleet.frames(START, days=1), size=10)
    wh = day_wh(fleet, 1)
    ends = ends_of(1)
    resent = day0[0][5]
    mixed = [
        m[0].push(ends, wh[0]),  # fast
        m[1].push(ends, wh[1]),  # fast
        m[2].push(ends[:48], wh[2, :48]),  # two frames of one meter in the batch
        m[2].push(ends[48:], wh[2, 48:]),
        m[3].push(ends, wh[3]),  # today's push beside a resend of yesterday's (a duplicate)
        day0[0][3],
        resent,  # meter 5 resends yesterday's push only: a duplicate, nothing placed
        m[6].push(ends[:50], wh[6, :50]),  # fast, then the rest of the day in the next batch
        attacks.forged(m[7], ends, wh[7]),  # T2: bad tag, meter 7 has nothing accepted
        m[8].push(ends_of(0, 90, 6), np.zeros(6, np.uint32)),  # into yesterday's stored day
        m[9].push(ends, wh[9]),  # fast
        attacks.unknown_meter(ends, wh[9]),
        b"\x0f\x00\x00",
    ]
    m[8].register_wh += int(wh[8].sum())  # (meter 8 claims zero for intervals already stored)
    rest = [m[6].push(ends[50:], wh[6, 50:]), m[8].push(ends_of(2), day_wh(fleet, 2)[8])]
    seen = compare(lanes, key_rows(m), [*day0, mixed, rest])
    assert [a[0] for a in seen.answers[1]] == [
        *["accepted"] * 5,
        "duplicate",
        "duplicate",
        "accepted",
        "rejected",
        "accepted",
        "accepted",
        "rejected",
        "rejected",
    ]
    assert seen.fast_frames == 10 + 4 + 0  # day 0; meters 0, 1, 6 and 9; day 2 of meter 8 gaps
    assert {a[1] for a in seen.answers[1]} >= {"bad_tag", "unknown_meter", "unprotected"}


def test_C1_5_replays_and_resends_in_the_batch_after_a_fast_push_agree(lanes: Lanes) -> None:
    fleet = Fleet.create(3, SEED)
    m = fleet.meters
    day0 = batches_of(fleet.frames(START, days=1), size=3)
    day1 = batches_of(fleet.frames(START + dt.timedelta(days=1), days=1), size=3)
    day2 = batches_of(fleet.frames(START + dt.timedelta(days=2), days=1), size=3)
    # Meter 0's day 1 is withheld and injected after day 2: a replay; meter 1's day 1 is resent.
    batches = [day0[0], [day1[0][1], day1[0][2]], day2[0], [day1[0][0], day1[0][1]]]
    seen = compare(lanes, key_rows(m), batches)
    assert [a[1] or a[0] for a in seen.answers[3]] == ["replay", "duplicate"]
    assert seen.fast_frames == 3 + 2 + 2  # meter 0's day 2 follows a gap


def test_a_sparse_first_push_does_not_break_the_batch(lanes: Lanes) -> None:
    """Two readings far apart in a meter's first push: the provisioned interval holds, the
    readings in between are estimated."""
    fleet = Fleet.create(2, SEED)
    m, wh = fleet.meters, day_wh(fleet, 0)
    general = [m[0].push(ends_of(0, 0, 1), wh[0, :1]), m[0].push(ends_of(0, 80, 1), wh[0, 80:81])]
    fast = [m[1].push(ends_of(0)[[0, 80]], wh[1, [0, 80]])]  # one frame: the fast lane's case
    seen = compare(lanes, key_rows(m), [general + fast])
    assert seen.outcomes() == {"accepted": 3}
    assert {b[0] for b in seen.blocks.values()} == {900}


# ---- random sequences -----------------------------------------------------------------------

INTERVALS = 3 * PER_DAY  # three days of quarter hours per meter


@dataclass(frozen=True)
class Push:
    meter: int
    first: int
    count: int
    status: int
    edit: tuple[str, int]
    """What differs from the meter's true profile at one interval (``at``): ``value`` +n (a
    re-sent profile with other values, a T3 tamper: n=1 is within the tolerance, n=2 not),
    ``register`` -(value + n) (the register stands still, n=0, or goes back 1 Wh, n=1), or a
    consistent ``load`` of n Wh (7,500 Wh in a quarter hour is 30 kW: the spike limit)."""
    at: int = 0


edits = st.sampled_from(
    [("none", 0)] * 6
    + [("value", n) for n in (1, 2, -3, 10_000)]
    + [("register", 0), ("register", 1), ("load", 7_500), ("load", 7_501)]
)
pushes = st.builds(
    Push,
    st.integers(0, 2),
    st.integers(0, INTERVALS - 1),
    st.sampled_from([1, 2, 4, 12, 40, 96, 96, 96]),
    st.sampled_from([0, 0, 0, 0x08]),
    edits,
    st.integers(0, PER_DAY - 1),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Push], list[int], list[int]]:
    """Pushes mostly following on from the meter's last one (so the fast lane is taken), with
    random jumps (gaps, overlaps, going back); the order frames are delivered in (repeats are
    resends, an older counter after a newer one a replay); the batch sizes.

    A meter's first push, delivered before its others, carries two consecutive readings or more:
    ingest learns the meter's interval from its first batch, and a sparse one teaches it a
    wrong interval (``test_a_sparse_first_push_does_not_break_the_batch``, a known bug)."""
    made: list[Push] = []
    nxt = [0, 0, 0]
    for p in draw(st.lists(pushes, min_size=1, max_size=14)):
        first = nxt[p.meter] if draw(st.integers(0, 2)) else p.first
        aligned = PER_DAY - first % PER_DAY if draw(st.booleans()) else p.count
        if all(m.meter != p.meter for m in made):
            first, aligned = min(first, INTERVALS - 2), max(aligned, 2)
        count = max(1, min(aligned, INTERVALS - first))
        made.append(Push(p.meter, first, count, p.status, p.edit, p.at % count))
        nxt[p.meter] = min(first + count, INTERVALS - 1)
    order = list(range(len(made)))
    moves = draw(st.lists(st.integers(0, len(made) - 1), max_size=4))
    for at in moves:  # a resend, or a replay once a newer push got through
        order.insert(draw(st.integers(order.index(at) + 1, len(order))), at)
    cuts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=len(order)))
    return made, order, cuts


def history_frames(meters: list[SimulatedMeter], wh: np.ndarray, made: list[Push]) -> list[bytes]:
    """Each push sealed by its meter, in the order the pushes were made (counters rise)."""
    out = []
    for p in made:
        meter = meters[p.meter]
        cut = slice(p.first, p.first + p.count)
        values = wh[p.meter, cut].astype(np.int64)
        registers = meter.register_wh + np.cumsum(wh[p.meter], dtype=np.int64)[cut]
        kind, n = p.edit
        if kind == "value":
            values[p.at] = max(0, values[p.at] + n)
        elif kind == "register":
            registers[p.at] -= values[p.at] + n
        elif kind == "load":
            registers[p.at :] += n - values[p.at]
            values[p.at] = n
        status = np.full(p.count, p.status, np.uint8)
        ends = DAY0 + 900 * np.arange(p.first + 1, p.first + p.count + 1)
        out.append(
            meter.send_profile(ends, registers.astype(np.uint32), values.astype(np.uint32), status)
        )
    return out


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories())
def test_C1_5_random_histories_of_pushes_agree_on_both_paths(
    lanes: Lanes, history: tuple[list[Push], list[int], list[int]]
) -> None:
    made, order, cuts = history
    fleet = Fleet.create(3, SEED)
    wh = np.concatenate([day_wh(fleet, d) for d in range(3)], axis=1)
    sent = history_frames(fleet.meters, wh, made)
    delivered = [sent[i] for i in order]
    batches, at = [], 0
    for size in [*cuts, len(delivered)]:
        if at < len(delivered):
            batches.append(delivered[at : at + size])
            at += size
    assert sum(len(b) for b in batches) == len(delivered)
    fast, general = lanes.both(key_rows(fleet.meters), batches)
    assert_same(fast, general)
    event(f"fast lane placed {'some' if fast.fast_frames else 'no'} frames")
    event(f"outcomes {sorted(fast.outcomes())}")
    event(f"estimates {'yes' if any(t[1] for t in fast.totals) else 'no'}")
