"""Attack frames: each is what its X.1332 threat says, and fails (or is flagged) for that reason."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.dlms import frames, profile
from connectors.dlms.frames import FrameRejected, Reason
from connectors.meters import attacks
from connectors.meters.keys import MeterKeys
from connectors.meters.simulator import Fleet, SimulatedMeter
from tests.connectors.meters.helpers import (
    MONDAY,
    SEED,
    counter,
    day_s,
    open_profile,
    quarter_hours,
)

ENDS = quarter_hours(day_s(MONDAY), 8)
WH = np.array([40, 35, 30, 200, 650, 90, 45, 1200], dtype=np.uint32)


@pytest.fixture
def meter() -> SimulatedMeter:
    return Fleet.create(1, SEED).meters[0]


def reason_of(frame: bytes, keys: MeterKeys) -> Reason:
    with pytest.raises(FrameRejected) as refused:
        open_profile(frame, keys)
    return refused.value.reason


def state(meter: SimulatedMeter) -> tuple[int, int, MeterKeys]:
    return meter.invocation_counter, meter.register_wh, meter.keys


def test_T2_a_forged_frame_is_well_formed_but_fails_with_bad_tag(meter: SimulatedMeter) -> None:
    before = state(meter)
    guess = MeterKeys.random()
    frame = attacks.forged(meter, ENDS, WH, guess=guess)
    ciphered = frames.parse_ciphered(frame)
    assert (ciphered.system_title, ciphered.invocation_counter) == (meter.system_title, 1)
    assert reason_of(frame, meter.keys) is Reason.BAD_TAG
    # under the attacker's own keys it is a perfect profile: only the keys give it away
    assert open_profile(frame, guess).interval_wh.tolist() == WH.tolist()
    assert state(meter) == before


def test_T2_a_truncated_frame_is_refused_as_truncated(meter: SimulatedMeter) -> None:
    frame = meter.push(ENDS[:2], WH[:2])
    for keep in range(1, len(frame)):
        with pytest.raises(FrameRejected) as refused:
            frames.parse_ciphered(attacks.truncated(frame, keep))
        assert refused.value.reason is Reason.TRUNCATED, keep
    with pytest.raises(ValueError, match="keep"):
        attacks.truncated(frame, len(frame))


def test_T2_a_replayed_frame_is_genuine_but_its_counter_is_no_longer_new() -> None:
    fleet = Fleet.create(3, SEED)
    target = fleet.meters[1]
    attacker = attacks.Interceptor(target.system_title)
    delivered = list(attacker.relay(fleet.frames(MONDAY, days=1, push_intervals=32)))
    assert len(delivered) == 3 * 3 - 1
    (replayed,) = attacker.replay()

    last_delivered = max(counter(f) for m, f in delivered if m is target)
    assert counter(replayed) == 1 < last_delivered  # what the MDMS's replay check sees
    assert open_profile(replayed, target.keys).end_s[0] == day_s(MONDAY) + 900  # and it is real


def test_the_interceptor_passes_every_other_frame_untouched() -> None:
    fleet = Fleet.create(2, SEED)
    attacker = attacks.Interceptor(b"XSM\xff\xff\xff\xff\xff", count=5)
    sent = list(Fleet.create(2, SEED).frames(MONDAY, days=1, push_intervals=48))
    relayed = list(attacker.relay(fleet.frames(MONDAY, days=1, push_intervals=48)))
    assert [f for _, f in relayed] == [f for _, f in sent]
    assert attacker.replay() == []


def test_T3_tampered_profile_breaks_register_reconciliation(meter: SimulatedMeter) -> None:
    twin = Fleet.create(1, SEED).meters[0]
    honest = open_profile(twin.push(ENDS, WH), twin.keys)
    frame = attacks.tampered_profile(meter, ENDS, WH, lowered=[4, 7], factor=0.25)

    read = open_profile(frame, meter.keys)  # authentic: the link was not touched
    assert counter(frame) == 1 and meter.invocation_counter == 2
    assert read.register_wh.tolist() == honest.register_wh.tolist()
    assert read.interval_wh.tolist() == [40, 35, 30, 200, 162, 90, 45, 300]
    deltas = np.diff(read.register_wh.astype(np.int64), prepend=honest.register_wh[0] - WH[0])
    assert np.flatnonzero(deltas != read.interval_wh).tolist() == [4, 7]
    assert read.interval_wh.sum() < read.register_wh[-1] - (honest.register_wh[0] - WH[0])
    assert meter.register_wh == twin.register_wh  # the protected register counted it all


def test_T3_by_default_the_peak_quarter_is_lowered(meter: SimulatedMeter) -> None:
    read = open_profile(attacks.tampered_profile(meter, ENDS, WH), meter.keys)
    assert np.flatnonzero(read.interval_wh != WH).tolist() == [4, 7]


@pytest.mark.parametrize(("wh", "factor"), [(WH, 1.0), (WH, -0.1), (np.zeros(8, np.uint32), 0.5)])
def test_T3_a_tamper_that_lowers_nothing_is_refused(
    meter: SimulatedMeter, wh: np.ndarray, factor: float
) -> None:
    with pytest.raises(ValueError, match=r"lower|factor"):
        attacks.tampered_profile(meter, ENDS, wh, factor=factor)


def test_T2_a_frame_from_an_unprovisioned_meter_is_sound_but_unknown() -> None:
    fleet = Fleet.create(20, SEED)
    keys = MeterKeys.random()
    frame = attacks.unknown_meter(ENDS, WH, keys=keys)
    title = frames.parse_ciphered(frame).system_title
    assert title not in fleet.by_title()
    assert title[:3] == b"XSM"
    assert open_profile(frame, keys).interval_wh.tolist() == WH.tolist()


def test_T2_an_unprotected_frame_is_refused_and_readable_by_anyone(meter: SimulatedMeter) -> None:
    before = state(meter)
    frame = attacks.unprotected(meter, ENDS, WH)
    assert frame[0] == frames.TAG_DATA_NOTIFICATION
    with pytest.raises(FrameRejected) as refused:
        frames.parse_ciphered(frame)
    assert refused.value.reason is Reason.UNPROTECTED
    plain = profile.decode_body(frames.data_notification_body(frame))
    assert plain.interval_wh.tolist() == WH.tolist()  # T1: anyone on the link reads it
    assert state(meter) == before


@pytest.mark.parametrize("skew_s", [40 * 86400, -400 * 86400])
def test_T2_a_skewed_clock_puts_the_intervals_far_from_now(
    meter: SimulatedMeter, skew_s: int
) -> None:
    now = day_s(MONDAY) + 12 * 3600 + 17
    read = open_profile(attacks.skewed_clock(meter, now, skew_s, WH), meter.keys)
    assert read.end_s[-1] == (now + skew_s) // 900 * 900
    assert np.all(np.diff(read.end_s) == 900)
    assert abs(int(read.end_s[0]) - now) > abs(skew_s) - 3 * 3600
    assert meter.invocation_counter == 2
