"""The load-profile body of a meter's push (``docs/dlms-profile.md``), encoded and decoded.

Body (one A-XDR ``Data``)::

    structure(3) {
      octet-string(8)  system title
      octet-string(6)  profile OBIS 1.0.99.1.0.255
      array(n) of structure(4) {
        octet-string(12)       COSEM date-time of the interval end, UTC (deviation 0)
        unsigned               status (meter status bits)
        double-long-unsigned   cumulative +A register 1.0.1.8.0.255, Wh
        double-long-unsigned   +A energy of the interval, Wh
      }
    }

Why a fast path of our own: the generic decoder of ``dlms-cosem`` builds several Python objects
per value (about 150 µs for a day of 96 entries); ingest at 300 k readings/s leaves a budget of
about 3 µs per reading for everything. Each entry of this profile has a fixed 28-byte layout, so
a whole array is read with one ``numpy.frombuffer`` and its fixed bytes checked at once. A body
that is valid A-XDR but laid out otherwise (a ``date-time`` type 25 instead of an octet-string,
say) goes through ``dlms-cosem``'s generic parser instead; tests check both paths against it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from dlms_cosem import dlms_data
from numpy.typing import NDArray

from connectors.dlms.frames import FrameRejected, Reason, decode_length, encode_length

PROFILE_OBIS = bytes((1, 0, 99, 1, 0, 255))
REGISTER_OBIS = bytes((1, 0, 1, 8, 0, 255))
ENTRY_SIZE = 28
MAX_ENTRIES = 24 * 60  # a day of 1-minute intervals; a push carries at most a day
_HEAD = bytes((0x02, 0x03, 0x09, 0x08))
_ENTRY_FIXED = {0: 0x02, 1: 0x04, 2: 0x09, 3: 0x0C, 16: 0x11, 18: 0x06, 23: 0x06}

_ENTRY_DTYPE = np.dtype(
    [
        ("h", "V4"),
        ("year", ">u2"),
        ("month", "u1"),
        ("day", "u1"),
        ("dow", "u1"),
        ("hour", "u1"),
        ("minute", "u1"),
        ("second", "u1"),
        ("hundredths", "u1"),
        ("deviation", ">i2"),
        ("clock_status", "u1"),
        ("t1", "u1"),
        ("status", "u1"),
        ("t2", "u1"),
        ("register", ">u4"),
        ("t3", "u1"),
        ("value", ">u4"),
    ]
)
assert _ENTRY_DTYPE.itemsize == ENTRY_SIZE
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Profile:
    """A decoded push: the interval ends (epoch seconds, UTC) and their values, column-wise."""

    system_title: bytes
    end_s: NDArray[np.int64]
    status: NDArray[np.uint8]
    register_wh: NDArray[np.uint32]
    interval_wh: NDArray[np.uint32]

    def __len__(self) -> int:
        return len(self.end_s)


def _days_from_civil(
    y: NDArray[np.int64], m: NDArray[np.int64], d: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146097 + doe - 719468, dtype=np.int64)


def cosem_datetime(ts: dt.datetime) -> bytes:
    """12-byte COSEM date-time of an aware UTC time: deviation 0, clock status 0."""
    ts = ts.astimezone(dt.UTC)
    return (
        ts.year.to_bytes(2, "big")
        + bytes((ts.month, ts.day, ts.isoweekday(), ts.hour, ts.minute, ts.second, 0))
        + b"\x00\x00\x00"
    )


def encode_body(
    system_title: bytes,
    end_s: NDArray[np.int64] | list[int],
    status: NDArray[np.uint8] | list[int],
    register_wh: NDArray[np.uint32] | list[int],
    interval_wh: NDArray[np.uint32] | list[int],
) -> bytes:
    """Encode a profile body; interval ends in epoch seconds (UTC, whole seconds)."""
    ends = np.asarray(end_s, dtype=np.int64)
    n = len(ends)
    if not 1 <= n <= MAX_ENTRIES:
        raise ValueError(f"a push carries 1 to {MAX_ENTRIES} intervals, not {n}")
    days, secs = np.divmod(ends, 86400)
    dates = (np.datetime64("1970-01-01", "D") + days).astype("datetime64[D]")
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    months = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    mdays = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    entries = np.zeros(n, dtype=_ENTRY_DTYPE)
    entries["h"] = np.frombuffer(bytes((0x02, 0x04, 0x09, 0x0C)), dtype="V4")[0]
    entries["year"] = years
    entries["month"] = months
    entries["day"] = mdays
    entries["dow"] = (days + 3) % 7 + 1  # 1970-01-01 was a Thursday; Monday is 1
    entries["hour"] = secs // 3600
    entries["minute"] = secs // 60 % 60
    entries["second"] = secs % 60
    entries["t1"], entries["t2"], entries["t3"] = 0x11, 0x06, 0x06
    entries["status"] = status
    entries["register"] = register_wh
    entries["value"] = interval_wh
    return (
        _HEAD
        + system_title
        + b"\x09\x06"
        + PROFILE_OBIS
        + b"\x01"
        + encode_length(n)
        + entries.tobytes()
    )


def decode_body(body: bytes) -> Profile:
    """Decode a profile body: the fast path when the layout is this profile's, else generic."""
    if len(body) < 22 or body[:4] != _HEAD or body[12:20] != b"\x09\x06" + PROFILE_OBIS[:6]:
        return _decode_generic(body)
    if body[20] != 0x01:
        return _decode_generic(body)
    try:
        n, pos = decode_length(body, 21)
    except (IndexError, ValueError):
        raise FrameRejected(Reason.MALFORMED, "profile array length is cut short") from None
    if len(body) != pos + n * ENTRY_SIZE:
        return _decode_generic(body)
    if not 1 <= n <= MAX_ENTRIES:
        raise FrameRejected(Reason.MALFORMED, f"profile with {n} intervals")
    entries = np.frombuffer(body, dtype=_ENTRY_DTYPE, count=n, offset=pos)
    raw = np.frombuffer(body, dtype=np.uint8, count=n * ENTRY_SIZE, offset=pos).reshape(
        n, ENTRY_SIZE
    )
    for offset, value in _ENTRY_FIXED.items():
        if not (raw[:, offset] == value).all():
            return _decode_generic(body)
    return Profile(body[4:12], _entry_times(entries), *_entry_values(entries))


def _entry_values(
    entries: NDArray[np.void],
) -> tuple[NDArray[np.uint8], NDArray[np.uint32], NDArray[np.uint32]]:
    return (
        entries["status"].astype(np.uint8),
        entries["register"].astype(np.uint32),
        entries["value"].astype(np.uint32),
    )


def _entry_times(entries: NDArray[np.void]) -> NDArray[np.int64]:
    year = entries["year"].astype(np.int64)
    month = entries["month"].astype(np.int64)
    day = entries["day"].astype(np.int64)
    hour = entries["hour"].astype(np.int64)
    minute = entries["minute"].astype(np.int64)
    second = entries["second"].astype(np.int64)
    deviation = entries["deviation"]
    ok = (
        (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= 31)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
        & ((deviation == 0) | (deviation == -0x8000))
    )
    if not ok.all():
        bad = int(np.argmin(ok))
        raise FrameRejected(
            Reason.MALFORMED,
            f"interval {bad}: not a UTC COSEM date-time (fields {entries[bad].tolist()[1:11]})",
        )
    days = _days_from_civil(year, month, day)
    return np.asarray(days * 86400 + hour * 3600 + minute * 60 + second, dtype=np.int64)


def _datetime_s(value: object) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int((value - _EPOCH).total_seconds())
    if isinstance(value, bytes | bytearray) and len(value) == 12:
        entry = bytes(4) + bytes(value) + bytes(12)
        return int(_entry_times(np.frombuffer(entry, dtype=_ENTRY_DTYPE))[0])
    raise FrameRejected(Reason.MALFORMED, f"interval time is {type(value).__name__}")


def _decode_generic(body: bytes) -> Profile:
    """Parse with dlms-cosem's A-XDR parser, then check the profile's shape."""
    try:
        parsed = dlms_data.DlmsDataParser().parse(body, limit=1)
        root = parsed[0]
        trailing = len(body) - _parsed_length(body)
    except FrameRejected:
        raise
    except Exception as exc:  # dlms-cosem raises many kinds on bad bytes
        raise FrameRejected(Reason.MALFORMED, f"body is not A-XDR data: {exc!r}") from None
    if trailing:
        raise FrameRejected(Reason.MALFORMED, f"{trailing} bytes after the profile body")
    if not isinstance(root, dlms_data.DataStructure) or len(root.value) != 3:
        raise FrameRejected(Reason.MALFORMED, "body is not a structure of 3 elements")
    title, obis, array = root.value[0].to_python(), root.value[1].to_python(), root.value[2]
    if not isinstance(title, bytes | bytearray) or len(title) != 8:
        raise FrameRejected(Reason.MALFORMED, "body's first element is not an 8-byte title")
    if bytes(obis) != PROFILE_OBIS:
        raise FrameRejected(
            Reason.MALFORMED, f"profile OBIS {bytes(obis).hex()} is not 1.0.99.1.0.255"
        )
    if not isinstance(array, dlms_data.DataArray) or not 1 <= len(array.value) <= MAX_ENTRIES:
        raise FrameRejected(Reason.MALFORMED, "profile buffer is not an array of 1..1440")
    ends, status, register, value = [], [], [], []
    for i, entry in enumerate(array.value):
        fields = entry.value if isinstance(entry, dlms_data.DataStructure) else None
        if fields is None or len(fields) != 4:
            raise FrameRejected(Reason.MALFORMED, f"interval {i} is not a structure of 4")
        kinds = (
            dlms_data.UnsignedIntegerData,
            dlms_data.DoubleLongUnsignedData,
            dlms_data.DoubleLongUnsignedData,
        )
        if not all(isinstance(f, k) for f, k in zip(fields[1:], kinds, strict=True)):
            raise FrameRejected(Reason.MALFORMED, f"interval {i} has the wrong value types")
        ends.append(_datetime_s(fields[0].to_python()))
        status.append(int(fields[1].to_python()))
        register.append(int(fields[2].to_python()))
        value.append(int(fields[3].to_python()))
    return Profile(
        bytes(title),
        np.asarray(ends, dtype=np.int64),
        np.asarray(status, dtype=np.uint8),
        np.asarray(register, dtype=np.uint32),
        np.asarray(value, dtype=np.uint32),
    )


def _parsed_length(body: bytes) -> int:
    """Length of the first A-XDR Data element of ``body`` (to detect trailing bytes)."""
    fixed = {3: 1, 5: 4, 6: 4, 15: 1, 16: 2, 17: 1, 18: 2, 20: 8, 21: 8, 22: 1, 23: 4, 24: 8}
    fixed |= {25: 12, 26: 5, 27: 4, 0: 0}

    def walk(pos: int) -> int:
        tag = body[pos]
        pos += 1
        if tag in (1, 2):
            count, pos = decode_length(body, pos)
            for _ in range(count):
                pos = walk(pos)
            return pos
        if tag in (9, 10, 12, 13):
            length, pos = decode_length(body, pos)
            return pos + length
        if tag in fixed:
            return pos + fixed[tag]
        raise FrameRejected(Reason.MALFORMED, f"A-XDR type {tag} not expected in a profile")

    end = walk(0)
    if end > len(body):
        raise FrameRejected(Reason.MALFORMED, "body is cut short")
    return end
