"""MDMS ingest on both backends: every reason code, duplicates, replays, VEE flags and the
sealed store (C1.3, C1.5, C1.7, R1.2, R1.3, T2, T3)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import text

from broker.kit.envelope import EnvelopeError, KeyRing
from connectors.dlms import frames
from connectors.mdms.block import block_context
from connectors.mdms.readings import read_days
from tests.connectors.mdms.conftest import Mdms
from tests.connectors.mdms.factory import BLUE_BOOK_AK, BLUE_BOOK_EK, DAY0_NO, TestMeter


def _answer(result: object, i: int = 0) -> tuple[str, str | None]:
    a = result.answers[i]  # type: ignore[attr-defined]
    return a.status, a.reason


def _stored(mdms: Mdms, meter: TestMeter, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with mdms.db.transaction() as session:
        days = read_days(session, mdms.data_keys, meter.meter_id, DAY0_NO + day, DAY0_NO + day)
    assert len(days) == 1
    r = days[0].readings
    return r.end_s, r.value, r.quality


def test_C1_5_day_frame_is_accepted_and_stored_as_sent(mdms: Mdms) -> None:
    meter = TestMeter(1, BLUE_BOOK_EK, BLUE_BOOK_AK)
    mdms.provision(meter)
    ends = meter.ends(0)
    registers, values = meter.readings(ends)
    result = mdms.ingest(meter.frame(ends, registers, values))
    assert _answer(result) == ("accepted", None)
    assert result.answers[0].readings == 96 and result.readings_stored == 96
    end_s, stored_values, quality = _stored(mdms, meter, 0)
    assert (end_s == ends).all() and (stored_values == values).all() and not quality.any()


def test_C1_7_day_block_is_sealed_under_the_customer_key_and_bound_to_meter_and_day(
    mdms: Mdms,
) -> None:
    meter = TestMeter(2)
    mdms.provision(meter)
    mdms.ingest(meter.push_day(0))
    with mdms.db.engine.connect() as conn:
        sealed = bytes(conn.execute(text("SELECT sealed FROM reading_day")).scalar_one())
    register_bytes = int(meter.register).to_bytes(4, "little")
    assert register_bytes not in sealed  # the last register value is not in clear
    with mdms.db.transaction() as session:
        ring: KeyRing = mdms.data_keys.keyring(session)
        with pytest.raises(EnvelopeError):
            ring.open(sealed, block_context(meter.meter_id, DAY0_NO + 1))  # another day
        with pytest.raises(EnvelopeError):
            ring.open(sealed, block_context("58534D0000000999", DAY0_NO))  # another meter


def test_T2_forged_frame_is_rejected_as_bad_tag(mdms: Mdms) -> None:
    meter = TestMeter(3)
    mdms.provision(meter)
    ends = meter.ends(0)
    registers, values = meter.readings(ends)
    forged = meter.frame(ends, registers, values, keys=(bytes(16), bytes(16)))
    assert _answer(mdms.ingest(forged)) == ("rejected", "bad_tag")


def test_T2_changed_byte_in_transit_is_rejected_as_bad_tag(mdms: Mdms) -> None:
    meter = TestMeter(4)
    mdms.provision(meter)
    frame = bytearray(meter.push_day(0))
    frame[40] ^= 0x01
    assert _answer(mdms.ingest(bytes(frame))) == ("rejected", "bad_tag")


def test_unknown_system_title_is_rejected(mdms: Mdms) -> None:
    mdms.provision(TestMeter(5))
    stranger = TestMeter(6)
    assert _answer(mdms.ingest(stranger.push_day(0))) == ("rejected", "unknown_meter")


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda f: f[:-5], "truncated"),
        (lambda f: f[:12], "truncated"),
        (lambda f: f + b"\x00", "malformed"),
        (lambda f: b"\x0f" + f[1:], "unprotected"),
        (lambda f: b"\xdd" + f[1:], "wrong_suite"),
        (lambda f: f[:11] + bytes((0x31,)) + f[12:], "wrong_suite"),
        (lambda f: f[:11] + bytes((0x10,)) + f[12:], "unprotected"),
        (lambda f: b"\x42" + f[1:], "malformed"),
    ],
)
def test_C1_5_malformed_and_unprotected_frames_are_rejected_with_their_reason(
    mdms: Mdms, mangle: object, reason: str
) -> None:
    meter = TestMeter(7)
    mdms.provision(meter)
    frame = meter.push_day(0, count=2)  # short: a one-byte A-XDR length
    assert frame[11] == 0x30  # security control byte: the offset the cases above rely on
    assert _answer(mdms.ingest(mangle(frame))) == ("rejected", reason)  # type: ignore[operator]


def test_body_naming_another_meter_is_rejected(mdms: Mdms) -> None:
    meter, other = TestMeter(8), TestMeter(9)
    mdms.provision(meter, other)
    ends = meter.ends(0)
    registers, values = meter.readings(ends)
    frame = meter.frame(ends, registers, values, body_title=other.title)
    assert _answer(mdms.ingest(frame)) == ("rejected", "body_mismatch")


def test_clock_too_far_ahead_or_behind_is_rejected(mdms: Mdms) -> None:
    meter = TestMeter(10)
    mdms.provision(meter)
    ahead = meter.push_day(11)  # the MDMS clock is at day 10, 00:00
    behind = meter.push_day(-40)
    result = mdms.ingest(ahead, behind)
    assert [_answer(result, i) for i in (0, 1)] == [
        ("rejected", "clock_future"),
        ("rejected", "clock_past"),
    ]


def test_resent_batch_is_answered_duplicate_and_stores_each_reading_once(mdms: Mdms) -> None:
    meter = TestMeter(11)
    mdms.provision(meter)
    day0, day1 = meter.push_day(0), meter.push_day(1)
    first = mdms.ingest(day0, day1, batch_id="b1")
    again = mdms.ingest(day0, day1, batch_id="b1")
    assert [a.status for a in first.answers] == ["accepted", "accepted"]
    assert [a.status for a in again.answers] == ["duplicate", "duplicate"]
    assert again.readings_stored == 0
    with mdms.db.engine.connect() as conn:
        assert conn.execute(text("SELECT sum(readings) FROM reading_day")).scalar_one() == 192


def test_T2_replay_of_a_withheld_frame_is_rejected(mdms: Mdms) -> None:
    """An attacker captures day 1's frame, blocks it, and injects it after day 2 arrived."""
    meter = TestMeter(12)
    mdms.provision(meter)
    day0, withheld, day2 = meter.push_day(0), meter.push_day(1), meter.push_day(2)
    mdms.ingest(day0, day2)
    assert _answer(mdms.ingest(withheld)) == ("rejected", "replay")


def test_replay_within_one_batch_is_rejected(mdms: Mdms) -> None:
    meter = TestMeter(13)
    mdms.provision(meter)
    day0, day1 = meter.push_day(0), meter.push_day(1)
    result = mdms.ingest(day1, day0)
    assert [_answer(result, i) for i in (0, 1)] == [("accepted", None), ("rejected", "replay")]


def test_T3_profile_changed_on_the_meter_is_flagged_unreconciled(mdms: Mdms) -> None:
    meter = TestMeter(14)
    mdms.provision(meter)
    ends = meter.ends(0)
    registers, values = meter.readings(ends)
    tampered = values.copy()
    tampered[30:40] -= 60  # a lower profile, the protected register left as it counted
    result = mdms.ingest(meter.frame(ends, registers, tampered))
    assert result.answers[0].status == "accepted"
    assert "unreconciled" in result.answers[0].flags
    _, _, quality = _stored(mdms, meter, 0)
    assert np.flatnonzero(quality & 0x08).tolist() == list(range(30, 40))


def test_gap_is_estimated_and_a_later_real_reading_replaces_the_estimate(mdms: Mdms) -> None:
    meter = TestMeter(15)
    mdms.provision(meter)
    ends = meter.ends(0)
    registers, values = meter.readings(ends)
    morning = meter.frame(ends[:40], registers[:40], values[:40])
    rest = meter.frame(ends[50:], registers[50:], values[50:])
    result = mdms.ingest(morning, rest)
    assert result.estimates == 10
    end_s, stored, quality = _stored(mdms, meter, 0)
    assert len(end_s) == 96 and (quality[40:50] & 0x01).all()
    assert stored[40:50].sum() == values[40:50].sum()  # the register delta, spread
    resend = meter.frame(ends[:60], registers[:60], values[:60])  # the meter re-sends history
    assert _answer(mdms.ingest(resend)) == ("accepted", None)
    end_s, stored, quality = _stored(mdms, meter, 0)
    assert (stored == values).all() and not quality.any()


def test_negative_delta_spike_and_meter_status_are_flagged(mdms: Mdms) -> None:
    meter = TestMeter(16)
    mdms.provision(meter)
    ends = meter.ends(0, count=6)
    values = np.array([100, 100, 9_000, 100, 100, 100])
    registers = 50_000 + np.cumsum(values)
    registers[4] = registers[3] - 10  # the register went backwards
    status = np.array([0, 0, 0, 0, 0, 0x08], np.uint8)
    result = mdms.ingest(meter.frame(ends, registers, values, status))
    assert set(result.answers[0].flags) >= {"spike", "negative_delta", "meter_status"}


def test_conflicting_values_for_a_stored_interval_are_flagged_not_overwritten(mdms: Mdms) -> None:
    meter = TestMeter(17)
    mdms.provision(meter)
    ends = meter.ends(0)
    registers, values = meter.readings(ends)
    mdms.ingest(meter.frame(ends, registers, values))
    changed = values.copy()
    changed[5] += 1
    result = mdms.ingest(meter.frame(ends, registers, changed))
    assert result.answers[0].status == "accepted"
    _, stored, quality = _stored(mdms, meter, 0)
    assert (stored == values).all() and quality[5] & 0x20


def test_T4_flood_of_forged_frames_is_one_audit_summary_per_batch(mdms: Mdms) -> None:
    meter = TestMeter(18)
    mdms.provision(meter)
    ends = meter.ends(0, count=1)
    registers, values = meter.readings(ends)
    forged = [
        meter.frame(ends, registers, values, keys=(bytes(16), bytes(16))) for _ in range(2_000)
    ]
    before = len(mdms.audit_types())
    result = mdms.ingest(*forged)
    assert result.reasons() == {"bad_tag": 2_000}
    assert mdms.audit_types()[before:] == ["mdms.ingest_batch"]
    with mdms.db.engine.connect() as conn:
        tally = conn.execute(text("SELECT outcome, frames FROM ingest_tally")).all()
    assert tally == [("bad_tag", 2_000)]


def test_erased_customer_frames_are_refused_and_old_days_unreadable(mdms: Mdms) -> None:
    meter = TestMeter(19)
    mdms.provision(meter)
    mdms.ingest(meter.push_day(0))
    with mdms.db.transaction() as session:
        mdms.data_keys.destroy(session, meter.customer, "test", "erasure")
    assert _answer(mdms.ingest(meter.push_day(1))) == ("rejected", "unknown_meter")
    with mdms.db.transaction() as session, pytest.raises(Exception, match="destroyed"):
        read_days(session, mdms.data_keys, meter.meter_id, DAY0_NO, DAY0_NO)


def test_hourly_pushes_fill_one_day_block(mdms: Mdms) -> None:
    meter = TestMeter(20)
    mdms.provision(meter)
    pushes = [meter.push_day(0, first=4 * h, count=4) for h in range(24)]
    for start in range(0, 24, 5):
        result = mdms.ingest(*pushes[start : start + 5])
        assert {a.status for a in result.answers} == {"accepted"}
    end_s, _, quality = _stored(mdms, meter, 0)
    assert len(end_s) == 96 and not quality.any()


def test_answers_follow_frame_order_in_a_mixed_batch(mdms: Mdms) -> None:
    good, stranger = TestMeter(21), TestMeter(22)
    mdms.provision(good)
    mdms.clock.advance(timedelta(0))
    batch = [good.push_day(0), stranger.push_day(0), b"\x0f\x00", good.push_day(1)]
    result = mdms.ingest(*batch)
    assert [_answer(result, i) for i in range(4)] == [
        ("accepted", None),
        ("rejected", "unknown_meter"),
        ("rejected", "unprotected"),
        ("accepted", None),
    ]
    assert frames.Reason.UNKNOWN_METER.value in result.reasons()


def test_estimates_are_counted_only_where_they_are_stored(mdms: Mdms) -> None:
    """A sparse re-send inside a stored day estimates nothing: every interval has a reading."""
    meter = TestMeter(23)
    mdms.provision(meter)
    ends = meter.ends(0)
    registers, values = meter.readings(ends)
    mdms.ingest(meter.frame(ends, registers, values))
    sparse = meter.frame(ends[[20, 30]], registers[[20, 30]], values[[20, 30]])
    result = mdms.ingest(sparse)
    assert result.answers[0].status == "accepted"
    assert (result.estimates, result.flagged.get("estimated", 0)) == (0, 0)
    _, _, quality = _stored(mdms, meter, 0)
    assert not (quality & 0x01).any()
