"""Keys, titles and hand-built A-XDR shared by the DLMS tests.

The keys are the DLMS UA Blue/Green Book test keys, which gurux also uses as its defaults. The
encoder here is written from the Blue Book's A-XDR rules and shares no code with
``connectors.dlms``, so that it can judge our encoder and decoder.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from dlms_cosem import dlms_data
from hypothesis import HealthCheck, settings

ENCRYPTION_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AUTHENTICATION_KEY = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
MASTER_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")  # the KEK of RFC 3394 4.1
SYSTEM_TITLE = bytes.fromhex("4D4D4D0000BC614E")  # "MMM" 12345678, the Green Book server
PROFILE_OBIS = bytes((1, 0, 99, 1, 0, 255))

# DLMS UA Green Book, the ciphered xDLMS InitiateRequest of the HLS/ciphering example (also in
# dlms-cosem's tests/test_xdlms/test_initiate.py): suite 0, SC 0x30, IC 01234567, the keys above
# and SYSTEM_TITLE. The ciphered content is the same whichever ciphering APDU carries it.
GREEN_BOOK_PLAIN = bytes.fromhex("01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0")
GREEN_BOOK_CONTENT = bytes.fromhex(
    "30" "01234567" "801302FF8A7874133D414CED25B42534D28DB0047720606B175BD52211BE68"
    "41DB204D39EE6FDB8E356855"
)  # fmt: skip
GREEN_BOOK_IC = 0x01234567

# Property tests: enough examples to find the shallow bugs, few enough to keep the folder fast.
FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW = settings(max_examples=25, deadline=None, database=None)


@dataclass(frozen=True)
class Reading:
    """One interval as a meter means it: the 12 date-time bytes and the three values."""

    date_time: bytes
    status: int
    register_wh: int
    interval_wh: int


def date_time_bytes(
    ts: dt.datetime,
    *,
    day_of_week: int | None = None,
    hundredths: int = 0,
    deviation: int = 0,
    clock_status: int = 0,
) -> bytes:
    """COSEM date-time (Blue Book 4.1.6.1) of the wall-clock fields of ``ts``, as given."""
    dow = ts.isoweekday() if day_of_week is None else day_of_week
    return (
        ts.year.to_bytes(2, "big")
        + bytes((ts.month, ts.day, dow, ts.hour, ts.minute, ts.second, hundredths))
        + deviation.to_bytes(2, "big")
        + bytes((clock_status,))
    )


def epoch_s(ts: dt.datetime) -> int:
    """Whole seconds since 1970 of the wall-clock fields of ``ts`` read as UTC."""
    return calendar.timegm(ts.timetuple())


def body_bytes(
    readings: list[Reading],
    *,
    title: bytes = SYSTEM_TITLE,
    obis: bytes = PROFILE_OBIS,
    date_time_type: bool = False,
    count: bytes | None = None,
) -> bytes:
    """The profile body, tag by tag. ``date_time_type`` writes A-XDR ``date-time`` (type 25)
    instead of an octet-string; ``count`` replaces the encoding of the array length."""
    n = dlms_data.encode_variable_integer(len(readings)) if count is None else count
    out = b"\x02\x03" + b"\x09\x08" + title + b"\x09\x06" + obis + b"\x01" + n
    for r in readings:
        stamp = (b"\x19" if date_time_type else b"\x09\x0c") + r.date_time
        out += b"\x02\x04" + stamp + b"\x11" + bytes((r.status,))
        out += b"\x06" + r.register_wh.to_bytes(4, "big")
        out += b"\x06" + r.interval_wh.to_bytes(4, "big")
    return out
