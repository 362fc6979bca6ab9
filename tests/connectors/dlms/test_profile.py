"""The profile body codec agrees with dlms-cosem on every frame shape and refuses the rest (C1.5).

The oracle is dlms-cosem's own A-XDR parser (``DlmsDataParser``) and date-time reader; the
bodies are built by ``vectors.body_bytes``, which shares no code with ``connectors.dlms``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pytest
from dlms_cosem import dlms_data
from dlms_cosem import time as dlms_time
from hypothesis import given
from hypothesis import strategies as st

from connectors.dlms import profile
from connectors.dlms.frames import FrameRejected, Reason
from tests.connectors.dlms.vectors import (
    FAST,
    SYSTEM_TITLE,
    Reading,
    body_bytes,
    date_time_bytes,
    epoch_s,
)

U32_MAX = 2**32 - 1
Row = tuple[int, int, int, int]


def dlms_cosem_reads(body: bytes) -> tuple[bytes, list[Row]]:
    """What dlms-cosem makes of a body: the title and (epoch s, status, register, value)."""
    root = dlms_data.DlmsDataParser().parse(body, limit=1)[0]
    title, obis, array = root.value
    assert bytes(obis.value) == profile.PROFILE_OBIS
    rows = []
    for entry in array.value:
        stamp, status, register, value = entry.value
        if isinstance(stamp, dlms_data.DateTimeData):
            when, _ = stamp.value
        else:
            when, _ = dlms_time.datetime_from_bytes(bytes(stamp.value))
        assert when.utcoffset() in (None, dt.timedelta(0))  # deviation 0 or not specified
        rows.append((epoch_s(when), status.value, register.value, value.value))
    return bytes(title.value), rows


def rows_of(p: profile.Profile) -> list[Row]:
    return [
        (int(t), int(s), int(r), int(v))
        for t, s, r, v in zip(p.end_s, p.status, p.register_wh, p.interval_wh, strict=True)
    ]


def agree(body: bytes) -> profile.Profile:
    decoded = profile.decode_body(body)
    title, rows = dlms_cosem_reads(body)
    assert decoded.system_title == title
    assert rows_of(decoded) == rows
    return decoded


def no_fallback(*_: Any) -> profile.Profile:
    raise AssertionError("the fast path fell back to the generic parser")


def readings_every_minute(n: int, start: dt.datetime) -> list[Reading]:
    """``n`` readings a minute apart, with statuses 0..255 and values reaching 0 and 2^32-1."""
    out = []
    for i in range(n):
        ts = start + dt.timedelta(minutes=i)
        register = U32_MAX if i == n - 1 else i * 1000
        interval = 0 if i % 2 else U32_MAX
        out.append(Reading(date_time_bytes(ts), i % 256, register, interval))
    return out


SHAPES = [(1, b"\x01"), (96, b"\x60"), (127, b"\x7f"), (128, b"\x81\x80")]
SHAPES += [(255, b"\x81\xff"), (256, b"\x82\x01\x00"), (1440, b"\x82\x05\xa0")]


@pytest.mark.parametrize(("n", "length"), SHAPES)
def test_fast_path_decodes_every_array_length_form_as_dlms_cosem_does(
    n: int, length: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    readings = readings_every_minute(n, dt.datetime(2023, 12, 31, 23, 0))  # across a year end
    body = body_bytes(readings)
    assert body[20:21] + body[21 : 21 + len(length)] == b"\x01" + length
    monkeypatch.setattr(profile, "_decode_generic", no_fallback)
    decoded = agree(body)
    assert len(decoded) == n


@pytest.mark.parametrize(("n", "length"), SHAPES)
def test_encode_body_writes_the_bytes_of_the_specification(n: int, length: bytes) -> None:
    readings = readings_every_minute(n, dt.datetime(2024, 2, 28, 23, 30))  # across a leap day
    ends = [epoch_s(dt.datetime(2024, 2, 28, 23, 30) + dt.timedelta(minutes=i)) for i in range(n)]
    body = profile.encode_body(
        SYSTEM_TITLE,
        ends,
        [r.status for r in readings],
        [r.register_wh for r in readings],
        [r.interval_wh for r in readings],
    )
    assert body == body_bytes(readings)


@pytest.mark.parametrize("n", [1, 96, 1440])
def test_date_time_as_axdr_type_25_decodes_through_the_generic_path(n: int) -> None:
    readings = readings_every_minute(n, dt.datetime(2024, 12, 31, 23, 0))
    fast = profile.decode_body(body_bytes(readings))
    generic = agree(body_bytes(readings, date_time_type=True))
    assert rows_of(generic) == rows_of(fast)


def test_generic_path_accepts_long_form_lengths_and_mixed_date_time_types() -> None:
    readings = readings_every_minute(3, dt.datetime(2024, 6, 30, 23, 59))
    plain = body_bytes(readings)
    assert plain[22:26] == b"\x02\x04\x09\x0c"
    variants = [
        body_bytes(readings, count=b"\x82\x00\x03"),  # non-minimal array length
        body_bytes(readings).replace(b"\x09\x08", b"\x09\x81\x08", 1),  # long-form title length
        b"\x02\x81\x03" + body_bytes(readings)[2:],  # long-form structure count
        plain[:24] + b"\x19" + plain[26:],  # first time as type 25, the others octet-strings
    ]
    for body in variants:
        assert rows_of(agree(body)) == rows_of(profile.decode_body(plain))


TIMES = [
    dt.datetime(2024, 2, 29, 23, 45),  # leap day
    dt.datetime(2000, 2, 29, 12, 0),  # leap day of a year divisible by 400
    dt.datetime(2023, 12, 31, 23, 59, 59),  # year end
    dt.datetime(2024, 1, 31, 0, 0),  # month end
    dt.datetime(1970, 1, 1, 0, 0),
    dt.datetime(1969, 12, 31, 23, 59, 59),
    dt.datetime(1, 1, 1, 0, 0),
    dt.datetime(9999, 12, 31, 23, 59, 59),
    dt.datetime(2038, 1, 19, 3, 14, 8),
    dt.datetime(2106, 2, 7, 6, 28, 16),
]


@pytest.mark.parametrize("when", TIMES, ids=str)
@pytest.mark.parametrize("date_time_type", [False, True], ids=["octet-string", "type-25"])
def test_interval_ends_at_calendar_edges_decode_as_dlms_cosem_reads_them(
    when: dt.datetime, date_time_type: bool
) -> None:
    body = body_bytes([Reading(date_time_bytes(when), 0, 1, 2)], date_time_type=date_time_type)
    assert agree(body).end_s.tolist() == [epoch_s(when)]


@pytest.mark.parametrize(
    "fields",
    [
        {"deviation": 0x8000},  # not specified: read as UTC
        {"day_of_week": 0xFF},  # not specified
        {"day_of_week": 3},  # inconsistent with the date: not interpreted
        {"hundredths": 0xFF},
        {"hundredths": 99},
        {"clock_status": 0x81},  # invalid value, daylight saving: left to VEE
    ],
    ids=str,
)
def test_fields_the_profile_does_not_interpret_do_not_change_the_time(fields: Any) -> None:
    when = dt.datetime(2024, 3, 31, 1, 30)
    for date_time_type in (False, True):
        stamp = date_time_bytes(when, **fields)
        body = body_bytes([Reading(stamp, 0, 1, 2)], date_time_type=date_time_type)
        assert agree(body).end_s.tolist() == [epoch_s(when)]


def _stamp(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> bytes:
    return year.to_bytes(2, "big") + bytes((month, day, 0xFF, hour, minute, 0, 0, 0, 0, 0))


NOT_A_TIME = {
    "1900-02-29": _stamp(1900, 2, 29),  # not a leap year
    "2100-02-29": _stamp(2100, 2, 29),
    "2023-02-29": _stamp(2023, 2, 29),
    "2024-02-30": _stamp(2024, 2, 30),
    "2024-04-31": _stamp(2024, 4, 31),
    "month 0": _stamp(2024, 0, 1),
    "month 13": _stamp(2024, 13, 1),
    "day 0": _stamp(2024, 1, 0),
    "hour 24": _stamp(2024, 1, 1, 24),
    "minute 60": _stamp(2024, 1, 1, 0, 60),
    "second 60": _stamp(2024, 1, 1)[:7] + b"\x3c" + _stamp(2024, 1, 1)[8:],
    "year wildcard": _stamp(0xFFFF, 1, 1),
    "month wildcard": _stamp(2024, 0xFF, 1),
    "hour wildcard": _stamp(2024, 1, 1, 0xFF),
    "deviation -60 (UTC+1)": _stamp(2024, 1, 1)[:9] + (-60).to_bytes(2, "big", signed=True) + b"\0",
    "deviation +120": _stamp(2024, 1, 1)[:9] + (120).to_bytes(2, "big") + b"\0",
}


@pytest.mark.parametrize("stamp", NOT_A_TIME.values(), ids=NOT_A_TIME.keys())
@pytest.mark.parametrize("date_time_type", [False, True], ids=["octet-string", "type-25"])
def test_a_time_that_is_not_a_utc_instant_is_malformed_on_both_paths(
    stamp: bytes, date_time_type: bool
) -> None:
    body = body_bytes([Reading(stamp, 0, 1, 2)], date_time_type=date_time_type)
    with pytest.raises(FrameRejected) as caught:
        profile.decode_body(body)
    assert caught.value.reason is Reason.MALFORMED
    assert "interval 0" in caught.value.detail


def _structure(*elements: bytes) -> bytes:
    return bytes((0x02, len(elements))) + b"".join(elements)


GOOD = body_bytes([Reading(_stamp(2024, 5, 1), 0, 1, 2)])
ENTRY = GOOD[22:]
HEAD = b"\x02\x03\x09\x08" + SYSTEM_TITLE + b"\x09\x06" + bytes((1, 0, 99, 1, 0, 255))
MALFORMED_BODIES = {
    "empty": b"",
    "no entries": HEAD + b"\x01\x00",
    "1441 entries": HEAD + b"\x01\x82\x05\xa1" + ENTRY * 1441,
    "trailing byte": GOOD + b"\x00",
    "cut short": GOOD[:-1],
    "cut inside the header": GOOD[:10],
    "not a structure": b"\x01\x00",
    "structure of 2": _structure(b"\x09\x08" + SYSTEM_TITLE, b"\x01\x00"),
    "7-byte title": GOOD.replace(b"\x09\x08" + SYSTEM_TITLE, b"\x09\x07" + SYSTEM_TITLE[:7]),
    "other OBIS": GOOD.replace(bytes((1, 0, 99, 1, 0, 255)), bytes((1, 0, 99, 2, 0, 255))),
    "OBIS as structure of long-unsigned": HEAD[:12] + b"\x02\x01\x12\x01\x00" + GOOD[20:],
    "OBIS as a huge double-long-unsigned": HEAD[:12] + b"\x06\xff\xff\xff\xff" + GOOD[20:],
    "buffer not an array": HEAD + b"\x02\x01" + ENTRY,
    "entry of 3": HEAD + b"\x01\x01\x02\x03" + ENTRY[2:-5],
    "status as long-unsigned": GOOD.replace(b"\x11\x00\x06", b"\x12\x00\x00\x06"),
    "register as double-long": GOOD[:-10] + b"\x05" + GOOD[-9:],
    "time as 11-byte octet-string": HEAD + b"\x01\x01\x02\x04\x09\x0b" + ENTRY[4:15] + ENTRY[16:],
    "time as visible-string": GOOD.replace(b"\x09\x0c", b"\x0a\x0c"),
    "unknown A-XDR type": GOOD.replace(b"\x11\x00", b"\x07\x00"),
    "bad length form": HEAD + b"\x01\x85\x00\x00\x00\x00\x01" + ENTRY,
    "nested too deep": _structure(_structure(_structure(_structure(b"\x00")))),
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_a_body_that_is_no_profile_is_malformed(body: bytes) -> None:
    with pytest.raises(FrameRejected) as caught:
        profile.decode_body(body)
    assert caught.value.reason is Reason.MALFORMED


def test_an_array_announcing_four_billion_entries_is_refused_at_once() -> None:
    """dlms-cosem alone would loop over 2^32 phantom elements read past the end."""
    started = time.perf_counter()
    for body in (b"\x01\x84\xff\xff\xff\xff", HEAD + b"\x01\x84\xff\xff\xff\xff" + ENTRY):
        with pytest.raises(FrameRejected):
            profile.decode_body(body)
    # Not a speed target: refused up front takes microseconds, 2^32 phantom elements take
    # hours, so a bound this loose tells them apart on a loaded machine too.
    assert time.perf_counter() - started < 30.0


# --- properties ------------------------------------------------------------------------------

_times = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    stamp = date_time_bytes(
        draw(_times),
        day_of_week=draw(st.none() | st.sampled_from([0xFF, 1, 7])),
        hundredths=draw(st.sampled_from([0, 50, 99, 0xFF])),
        deviation=draw(st.sampled_from([0, 0x8000])),
        clock_status=draw(st.integers(0, 255)),
    )
    values = st.integers(0, U32_MAX)
    return Reading(stamp, draw(st.integers(0, 255)), draw(values), draw(values))


_reading_lists = st.lists(readings(), min_size=1, max_size=24)


@FAST
@given(_reading_lists)
def test_fast_path_agrees_with_dlms_cosem_on_any_valid_body(rs: list[Reading]) -> None:
    agree(body_bytes(rs))


@FAST
@given(_reading_lists)
def test_generic_path_agrees_with_dlms_cosem_on_any_valid_body(rs: list[Reading]) -> None:
    assert rows_of(agree(body_bytes(rs, date_time_type=True))) == rows_of(
        profile.decode_body(body_bytes(rs))
    )


_ends = st.integers(epoch_s(dt.datetime(1, 1, 1)), epoch_s(dt.datetime(9999, 12, 31, 23, 59, 59)))


@FAST
@given(
    st.binary(min_size=8, max_size=8),
    st.lists(
        st.tuples(_ends, st.integers(0, 255), st.integers(0, U32_MAX)), min_size=1, max_size=100
    ),
)
def test_encode_then_decode_gives_back_the_readings(
    title: bytes, rows: list[tuple[int, int, int]]
) -> None:
    ends, status, values = ([r[i] for r in rows] for i in range(3))
    body = profile.encode_body(title, ends, status, values, values[::-1])
    decoded = profile.decode_body(body)
    assert decoded.system_title == title
    assert decoded.end_s.tolist() == ends
    assert decoded.status.tolist() == status
    assert decoded.register_wh.tolist() == values
    assert decoded.interval_wh.tolist() == values[::-1]


def decodes_or_is_refused(body: bytes) -> None:
    """A body decodes to a well-formed profile, or is refused as malformed: nothing else."""
    try:
        decoded = profile.decode_body(body)
    except FrameRejected as exc:
        refused: Reason | None = exc.reason
    else:
        refused = None
        assert 1 <= len(decoded) <= profile.MAX_ENTRIES
        assert len(decoded.system_title) == 8
        columns = (decoded.status, decoded.register_wh, decoded.interval_wh)
        assert {len(c) for c in columns} == {len(decoded)}
    assert refused in (None, Reason.MALFORMED)


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_are_malformed_never_another_exception(body: bytes) -> None:
    decodes_or_is_refused(body)


@FAST
@given(st.binary(max_size=60))
def test_arbitrary_bytes_after_a_valid_head_decode_or_are_malformed(tail: bytes) -> None:
    decodes_or_is_refused(HEAD + tail)
    decodes_or_is_refused(HEAD + b"\x01" + tail)


@FAST
@given(
    _reading_lists,
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 10_000),
)
def test_mutated_bodies_decode_or_are_malformed(
    rs: list[Reading], type_25: bool, changes: list[tuple[int, int]], cut: int
) -> None:
    body = bytearray(body_bytes(rs, date_time_type=type_25))
    for at, value in changes:
        body[at % len(body)] = value
    decodes_or_is_refused(bytes(body))
    decodes_or_is_refused(bytes(body[: cut % len(body)]))
    decodes_or_is_refused(bytes(body[: cut % len(body)] + b"\x00" + body[cut % len(body) :]))


# --- encoding errors --------------------------------------------------------------------------

ONE = ([1_700_000_000], [0], [1], [2])
BAD_COLUMNS: dict[str, tuple[Any, ...]] = {
    "no intervals": ([], [], [], []),
    "1441 intervals": ([0] * 1441, [0] * 1441, [0] * 1441, [0] * 1441),
    "a status short": ([0, 60], [0], [1, 2], [1, 2]),
    "status 256": (ONE[0], [256], ONE[2], ONE[3]),
    "negative register": (ONE[0], ONE[1], [-1], ONE[3]),
    "interval 2^32": (ONE[0], ONE[1], ONE[2], [2**32]),
    "value beyond int64": (ONE[0], ONE[1], [2**70], ONE[3]),
    "before year 1": ([epoch_s(dt.datetime(1, 1, 1)) - 1], *ONE[1:]),
    "after year 9999": ([epoch_s(dt.datetime(9999, 12, 31, 23, 59, 59)) + 1], *ONE[1:]),
    "two-dimensional ends": ([[1_700_000_000]], *ONE[1:]),
}


@pytest.mark.parametrize("columns", BAD_COLUMNS.values(), ids=BAD_COLUMNS.keys())
def test_encode_body_refuses_what_no_meter_could_send(columns: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError, match=r"."):
        profile.encode_body(SYSTEM_TITLE, *columns)


def test_encode_body_refuses_a_title_that_is_not_8_bytes() -> None:
    with pytest.raises(ValueError, match="system title"):
        profile.encode_body(SYSTEM_TITLE[:7], *ONE)


def test_cosem_datetime_writes_the_utc_fields_of_an_aware_time() -> None:
    berlin_summer = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2024, 7, 1, 1, 30, 15, 990_000, tzinfo=berlin_summer)
    stamp = profile.cosem_datetime(when)
    assert stamp == date_time_bytes(dt.datetime(2024, 6, 30, 23, 30, 15))
    body = body_bytes([Reading(stamp, 0, 0, 0)])
    assert profile.decode_body(body).end_s.tolist() == [int(when.timestamp())]


def test_cosem_datetime_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        profile.cosem_datetime(dt.datetime(2024, 7, 1))


def test_decoded_columns_have_the_documented_types() -> None:
    decoded = profile.decode_body(GOOD)
    assert decoded.end_s.dtype == np.int64
    assert decoded.status.dtype == np.uint8
    assert decoded.register_wh.dtype == np.uint32
    assert decoded.interval_wh.dtype == np.uint32
