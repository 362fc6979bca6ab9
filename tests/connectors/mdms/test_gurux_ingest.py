"""Frames built by gurux-dlms, an independent implementation, go through the whole MDMS ingest
(C1.5, R1.4): accepted with the DLMS Blue Book test keys, stored as the readings gurux was
given, and a gurux frame under other keys is refused as bad_tag (T2)."""

from __future__ import annotations

import datetime as dt

from connectors.mdms.readings import read_days
from tests.connectors.dlms.test_gurux_interop import Row, gurux_body, gurux_notify
from tests.connectors.dlms.vectors import AUTHENTICATION_KEY, ENCRYPTION_KEY, SYSTEM_TITLE
from tests.connectors.mdms.conftest import Mdms
from tests.connectors.mdms.factory import DAY0, DAY0_NO, TestMeter


def _day_rows(day: int, register: int) -> list[Row]:
    start = dt.datetime.fromtimestamp(DAY0, dt.UTC) + dt.timedelta(days=day)
    out: list[Row] = []
    for i in range(96):
        value = 80 + (i * 37) % 400
        register += value
        out.append((start + dt.timedelta(minutes=15 * (i + 1)), 0, register, value))
    return out


def _gurux_meter() -> TestMeter:
    serial = int.from_bytes(SYSTEM_TITLE[3:], "big")
    meter = TestMeter(serial, ENCRYPTION_KEY, AUTHENTICATION_KEY, manufacturer=SYSTEM_TITLE[:3])
    assert meter.title == SYSTEM_TITLE
    return meter


def test_C1_5_gurux_data_notifications_are_accepted_and_stored_as_gurux_sent_them(
    mdms: Mdms,
) -> None:
    mdms.provision(_gurux_meter())
    day0 = _day_rows(0, 10_000)
    day1 = _day_rows(1, day0[-1][2])
    (first,) = gurux_notify(ic=5).generateDataNotificationMessages(None, gurux_body(day0, False))
    (second,) = gurux_notify(ic=6).generateDataNotificationMessages(None, gurux_body(day1, True))
    result = mdms.ingest(bytes(first), bytes(second))
    assert [(a.status, a.flags) for a in result.answers] == [("accepted", []), ("accepted", [])]
    with mdms.db.transaction() as session:
        stored = read_days(session, mdms.data_keys, _gurux_meter().meter_id, DAY0_NO, DAY0_NO + 1)
    got = [
        (int(e), int(r), int(v))
        for d in stored
        for e, r, v in zip(d.readings.end_s, d.readings.register, d.readings.value, strict=True)
    ]
    sent = [(int(t.timestamp()), r, v) for t, _s, r, v in day0 + day1]
    assert got == sent


def test_T2_gurux_frame_under_other_keys_is_rejected(mdms: Mdms) -> None:
    meter = _gurux_meter()
    meter.ek = bytes(16)  # the MDMS holds other keys than the ones gurux seals with
    mdms.provision(meter)
    (frame,) = gurux_notify(ic=5).generateDataNotificationMessages(
        None, gurux_body(_day_rows(0, 1000), False)
    )
    result = mdms.ingest(bytes(frame))
    assert (result.answers[0].status, result.answers[0].reason) == ("rejected", "bad_tag")
