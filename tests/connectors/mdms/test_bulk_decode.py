"""Decoding a batch's bodies together gives, body by body, what ``profile.decode_body`` gives
(C1.5).

``bulk.decode_bodies`` is what ingest calls; ``profile.decode_body`` (checked against
dlms-cosem in ``tests/connectors/dlms/test_profile.py``) is the oracle. Each body must come back
as ``Decoded.of(decode_body(body))``, or as a ``FrameRejected`` with the same reason and detail.
Where a body should be decoded in bulk, the tests also check it was: the fall-back to
``decode_body`` is replaced by a spy that records which bodies took it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.dlms import bulk, profile
from connectors.dlms.frames import FrameRejected, Reason
from tests.connectors.dlms.vectors import Reading, body_bytes, date_time_bytes, epoch_s

U32_MAX = 2**32 - 1
SHAPES = [1, 96, 127, 128, 255, 256, 1440]
START = dt.datetime(2024, 2, 28, 23, 0)  # a leap day inside the longer shapes
TITLES = [b"XSM" + i.to_bytes(5, "big") for i in range(64)]
Expected = bulk.Decoded | FrameRejected
SEEDED = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def readings(n: int, start: dt.datetime = START, step_s: int = 60, seed: int = 0) -> list[Reading]:
    """``n`` readings ``step_s`` apart with seeded statuses and values reaching 0 and 2^32-1."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, U32_MAX, size=(n, 2), endpoint=True)
    values[0] = (0, U32_MAX)
    status = rng.integers(0, 255, size=n, endpoint=True)
    return [
        Reading(
            date_time_bytes(start + dt.timedelta(seconds=i * step_s)),
            int(status[i]),
            int(values[i, 0]),
            int(values[i, 1]),
        )
        for i in range(n)
    ]


def body(n: int, title: int = 0, seed: int = 0, date_time_type: bool = False) -> bytes:
    return body_bytes(readings(n, seed=seed), title=TITLES[title], date_time_type=date_time_type)


def one_by_one(b: bytes) -> Expected:
    try:
        return bulk.Decoded.of(profile.decode_body(b))
    except FrameRejected as exc:
        return exc


def assert_same(got: Expected, want: Expected, where: object = "") -> None:
    if isinstance(want, FrameRejected):
        assert isinstance(got, FrameRejected), f"{where}: decoded, expected {want}"
        assert (got.reason, got.detail) == (want.reason, want.detail), where
        return
    assert isinstance(got, bulk.Decoded), f"{where}: {got}"
    assert got.system_title == want.system_title, where
    for name in ("end_s", "status", "register", "value"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, f"{where}: {name} is {a.dtype}, not {b.dtype}"
        assert np.array_equal(a, b), f"{where}: {name} differs"
    assert (got.earliest, got.latest) == (want.earliest, want.latest), where


def check(bodies: list[bytes]) -> list[Expected]:
    got = bulk.decode_bodies(bodies)
    assert len(got) == len(bodies)
    for i, (g, b) in enumerate(zip(got, bodies, strict=True)):
        assert_same(g, one_by_one(b), f"body {i}")
    return got


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies ``decode_bodies`` handed to ``decode_body`` one by one."""
    taken: list[bytes] = []
    original: Callable[[bytes], profile.Profile] = profile.decode_body

    def spy(b: bytes) -> profile.Profile:
        taken.append(b)
        return original(b)

    monkeypatch.setattr(bulk, "decode_body", spy)
    return taken


# ---- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", SHAPES)
def test_every_array_length_form_decodes_in_bulk_as_one_by_one(
    n: int, fallbacks: list[bytes]
) -> None:
    (decoded,) = check([body(n)])
    assert fallbacks == []
    assert isinstance(decoded, bulk.Decoded) and len(decoded.end_s) == n


def test_a_batch_of_every_shape_decodes_in_bulk_with_each_body_its_own_columns(
    fallbacks: list[bytes],
) -> None:
    bodies = [body(n, title=i, seed=i) for i, n in enumerate(SHAPES * 3)]
    got = check(bodies)
    assert fallbacks == []
    assert [len(g.end_s) for g in got if isinstance(g, bulk.Decoded)] == SHAPES * 3
    assert [g.system_title for g in got if isinstance(g, bulk.Decoded)] == TITLES[:21]


def test_decoded_columns_are_64_bit_with_the_span_of_the_interval_ends() -> None:
    rs = readings(96, step_s=900)
    rs = rs[50:] + rs[:50]  # not in time order: the span is still the min and max
    (d,) = bulk.decode_bodies([body_bytes(rs)])
    assert isinstance(d, bulk.Decoded)
    assert [c.dtype for c in (d.end_s, d.register, d.value)] == [np.dtype(np.int64)] * 3
    assert d.status.dtype == np.dtype(np.uint8)
    assert d.earliest == epoch_s(START) == d.end_s[46]
    assert d.latest == epoch_s(START + dt.timedelta(seconds=900 * 95)) == d.end_s[45]


# ---- one bad body among many -------------------------------------------------------------


def with_byte(b: bytes, at: int, value: int) -> bytes:
    out = bytearray(b)
    out[at] = value
    return bytes(out)


ENTRY_AT = 22  # the first entry of a body with a one-byte array length (1 to 127 entries)


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (0, 0x01),  # the entry is not a structure
        (1, 0x03),  # a structure of 3
        (2, 0x0A),  # the time as a visible-string
        (3, 0x0B),  # an 11-byte octet-string
        (16, 0x12),  # the status as long-unsigned
        (18, 0x05),  # the register as double-long
        (23, 0x07),  # an A-XDR type a profile never holds
    ],
)
def test_a_bad_type_byte_in_one_of_many_bodies_rejects_only_that_body(
    offset: int, value: int, fallbacks: list[bytes]
) -> None:
    bodies = [body(96, title=i, seed=i) for i in range(40)]
    bad = with_byte(bodies[17], ENTRY_AT + 40 * profile.ENTRY_SIZE + offset, value)
    bodies[17] = bad
    got = check(bodies)
    assert fallbacks == [bad]
    assert isinstance(got[17], FrameRejected) and got[17].reason is Reason.MALFORMED
    assert all(isinstance(g, bulk.Decoded) for i, g in enumerate(got) if i != 17)


def test_bodies_that_are_no_profile_beside_good_ones_are_rejected_as_one_by_one(
    fallbacks: list[bytes],
) -> None:
    good = body(3)
    odd = [b"", b"\x02", good[:-1], good + b"\x00", good[:21] + b"\x80" + good[22:], body(1)[:22]]
    odd.append(good[:20] + b"\x02" + good[21:])  # the buffer is a structure
    odd.append(good[:21] + b"\x82\x00" + good[22:])  # the length cut short
    bodies = [good, *odd, good]
    got = check(bodies)
    assert all(isinstance(g, FrameRejected) for g in got[1:-1])
    assert sorted(fallbacks) == sorted(odd)


# ---- date-times ------------------------------------------------------------------------------


def stamp(year: int, month: int, day: int, hour: int = 0, **kw: int) -> bytes:
    fields = {"hundredths": 0, "deviation": 0, "clock_status": 0} | kw
    return (
        year.to_bytes(2, "big")
        + bytes((month, day, 0xFF, hour, 15, 0, fields["hundredths"]))
        + fields["deviation"].to_bytes(2, "big")
        + bytes((fields["clock_status"],))
    )


REFUSED = {
    "month 13": stamp(2024, 13, 1),
    "month 0": stamp(2024, 0, 1),
    "2023-02-29": stamp(2023, 2, 29),
    "1900-02-29": stamp(1900, 2, 29),
    "2024-04-31": stamp(2024, 4, 31),
    "day 0": stamp(2024, 1, 0),
    "hour 24": stamp(2024, 1, 1, 24),
    "year not specified": stamp(0xFFFF, 1, 1),
    "deviation -60": stamp(2024, 1, 1, deviation=0xFFC4),
}


def among_good(s: bytes, at: int = 5) -> list[bytes]:
    """Ten good bodies, body ``at`` with entry 7's date-time replaced by ``s``."""
    bodies = [body(12, title=i, seed=i) for i in range(10)]
    t = ENTRY_AT + 7 * profile.ENTRY_SIZE + 4
    bodies[at] = bodies[at][:t] + s + bodies[at][t + 12 :]
    return bodies


@pytest.mark.parametrize("s", REFUSED.values(), ids=REFUSED.keys())
def test_an_impossible_date_time_is_malformed_in_that_body_only(
    s: bytes, fallbacks: list[bytes]
) -> None:
    bodies = among_good(s)
    got = check(bodies)
    assert isinstance(got[5], FrameRejected) and got[5].reason is Reason.MALFORMED
    assert "interval 7" in got[5].detail
    assert fallbacks == [bodies[5]]


@pytest.mark.parametrize("year", [2024, 2000, 2400])
def test_february_29_of_a_leap_year_decodes_in_bulk(year: int, fallbacks: list[bytes]) -> None:
    got = check(among_good(stamp(year, 2, 29, 23)))
    assert fallbacks == []
    d = got[5]
    assert isinstance(d, bulk.Decoded)
    assert d.end_s[7] == epoch_s(dt.datetime(year, 2, 29, 23, 15))


ACCEPTED = {
    "deviation 0x8000 (not specified)": stamp(2024, 3, 31, 1, deviation=0x8000),
    "hundredths 50": stamp(2024, 3, 31, 1, hundredths=50),
    "hundredths 0xFF (not specified)": stamp(2024, 3, 31, 1, hundredths=0xFF),
    "clock status 0x81": stamp(2024, 3, 31, 1, clock_status=0x81),
    "year 1": stamp(1, 1, 1, 1),
    "year 9999": stamp(9999, 12, 31, 1),
}


@pytest.mark.parametrize("s", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_fields_read_as_utc_decode_as_one_by_one(s: bytes) -> None:
    got = check(among_good(s))
    d = got[5]
    assert isinstance(d, bulk.Decoded)
    when = dt.datetime(int.from_bytes(s[:2], "big"), s[2], s[3], s[5], 15)
    assert d.end_s[7] == epoch_s(when)


@pytest.mark.parametrize("n", [1, 96, 1440])
def test_date_times_as_axdr_type_25_decode_as_their_octet_string_twins(
    n: int, fallbacks: list[bytes]
) -> None:
    twins = [body(n, seed=n), body(n, seed=n, date_time_type=True)]
    first, second = check([twins[0], twins[1], twins[0]])[:2]
    assert fallbacks == [twins[1]]
    assert isinstance(second, bulk.Decoded)
    assert_same(second, first, "type 25")


# ---- properties ------------------------------------------------------------------------------

_times = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))


@st.composite
def entries(draw: st.DrawFn) -> Reading:
    s = date_time_bytes(
        draw(_times),
        day_of_week=draw(st.none() | st.sampled_from([0xFF, 3])),
        hundredths=draw(st.sampled_from([0, 0, 0, 99, 0xFF])),
        deviation=draw(st.sampled_from([0, 0, 0, 0x8000])),
        clock_status=draw(st.sampled_from([0, 0, 0x80])),
    )
    v = st.integers(0, U32_MAX)
    return Reading(s, draw(st.integers(0, 255)), draw(v), draw(v))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    rs = draw(st.lists(entries(), min_size=1, max_size=8))
    b = bytearray(body_bytes(rs, title=draw(st.binary(min_size=8, max_size=8))))
    for at, value in draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)))):
        b[at % len(b)] = value  # mutated: a type byte, a length, a date field, a value
    if draw(st.integers(0, 9)) == 0:
        b = b[: draw(st.integers(0, len(b)))]
    return bytes(b)


@SEEDED
@given(st.lists(bodies(), min_size=1, max_size=12))
def test_any_mix_of_valid_and_mutated_bodies_decodes_as_one_by_one(bs: list[bytes]) -> None:
    check(bs)


_dates = st.tuples(
    st.integers(0, 0xFFFF), st.integers(0, 14), st.integers(0, 32), st.integers(0, 25)
)


@SEEDED
@given(st.lists(_dates, min_size=1, max_size=20))
def test_any_calendar_fields_decode_or_are_refused_as_one_by_one(
    dates: list[tuple[int, int, int, int]],
) -> None:
    """Years, months, days and hours at and past every limit, one body each and together."""
    bs = [body_bytes([Reading(stamp(y, m, d, h), 0, 1, 2), *readings(2)]) for y, m, d, h in dates]
    check(bs)
