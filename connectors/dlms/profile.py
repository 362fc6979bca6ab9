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
a long-form length, say) goes through ``dlms-cosem``'s generic parser instead; tests check both
paths against it.

Both paths judge an interval time by the same rules (:func:`_valid_times`): a real calendar date
and time of day (no wildcards), deviation 0 or 0x8000 (not specified), both read as UTC; the day
of week, the hundredths and the clock status are not interpreted. A non-zero deviation is
refused rather than applied: companion standards disagree on its sign, and a wrong guess would
shift every reading by hours without anyone noticing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from dlms_cosem import dlms_data
from numpy.typing import NDArray

from connectors.dlms.frames import (
    SYSTEM_TITLE_LENGTH,
    FrameRejected,
    Reason,
    decode_length,
    encode_length,
)

PROFILE_OBIS = bytes((1, 0, 99, 1, 0, 255))
REGISTER_OBIS = bytes((1, 0, 1, 8, 0, 255))
ENTRY_SIZE = 28
MAX_ENTRIES = 24 * 60  # a day of 1-minute intervals; a push carries at most a day
BODY_HEAD = bytes((0x02, 0x03, 0x09, 0x08))  # structure(3), octet-string(8) system title
_ENTRY_FIXED = {0: 0x02, 1: 0x04, 2: 0x09, 3: 0x0C, 16: 0x11, 18: 0x06, 23: 0x06}  # type bytes
ENTRY_FIXED_AT = np.array(list(_ENTRY_FIXED), dtype=np.intp)
ENTRY_FIXED_IS = np.array(list(_ENTRY_FIXED.values()), dtype=np.uint8)
_TYPE_DATE_TIME = 25
_MAX_DEPTH = 3  # structure > array > structure: a container deeper than that is no profile
_FIXED_SIZES = {0: 0, 3: 1, 5: 4, 6: 4, 15: 1, 16: 2, 17: 1, 18: 2, 20: 8, 21: 8, 22: 1, 23: 4}
_FIXED_SIZES |= {24: 8, _TYPE_DATE_TIME: 12, 26: 5, 27: 4}
# Date-time checks on the columns year(0-1) month(2) day(3) dow(4) hour(5) minute(6) second(7):
_RANGE_COLUMNS = np.array([2, 3, 5, 6, 7])
_RANGE_LOW = np.array([1, 1, 0, 0, 0])
_RANGE_HIGH = np.array([12, 31, 23, 59, 59])
_YEAR_NOT_SPECIFIED = 0xFFFF
_MIN_YEAR, _MAX_YEAR = 1, 9999
_COMMON_YEAR = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # indexed by month 1..12
_MONTH_DAYS = np.array([_COMMON_YEAR, [d + (m == 2) for m, d in enumerate(_COMMON_YEAR)]])
_DAYS_BEFORE_MONTH = np.array(
    [[0, *np.cumsum(_COMMON_YEAR[:-1])], [0, *np.cumsum(_MONTH_DAYS[1][:-1])]], dtype=np.int64
)
_LEAP_DAYS_BEFORE_1970 = 1969 // 4 - 1969 // 100 + 1969 // 400

ENTRY_DTYPE = np.dtype(
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
assert ENTRY_DTYPE.itemsize == ENTRY_SIZE


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


def cosem_datetime(ts: dt.datetime) -> bytes:
    """12-byte COSEM date-time of an aware time, in UTC: deviation 0, hundredths and clock
    status 0 (the sub-second part is dropped). A naive time is refused (``ValueError``)."""
    if ts.utcoffset() is None:
        raise ValueError("cosem_datetime needs an aware datetime (a naive one has no instant)")
    ts = ts.astimezone(dt.UTC)
    return (
        ts.year.to_bytes(2, "big")
        + bytes((ts.month, ts.day, ts.isoweekday(), ts.hour, ts.minute, ts.second, 0))
        + b"\x00\x00\x00"
    )


def _column(name: str, values: object, n: int, top: int) -> NDArray[np.int64]:
    try:
        column = np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{name} outside 0..{top}") from None
    if column.shape != (n,):
        raise ValueError(f"{name} has shape {column.shape}, expected ({n},)")
    if column.min() < 0 or column.max() > top:
        raise ValueError(f"{name} outside 0..{top}")
    return column


def encode_body(
    system_title: bytes,
    end_s: NDArray[np.int64] | list[int],
    status: NDArray[np.uint8] | list[int],
    register_wh: NDArray[np.uint32] | list[int],
    interval_wh: NDArray[np.uint32] | list[int],
) -> bytes:
    """Encode a profile body; interval ends in epoch seconds (UTC, whole seconds, years
    1..9999). Raises ``ValueError`` on a title that is not 8 bytes, 0 or more than
    :data:`MAX_ENTRIES` intervals, columns of different lengths or values out of range."""
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise ValueError(f"system title must be {SYSTEM_TITLE_LENGTH} bytes")
    ends = np.asarray(end_s, dtype=np.int64)
    n = ends.size
    if ends.ndim != 1 or not 1 <= n <= MAX_ENTRIES:
        raise ValueError(f"a push carries 1 to {MAX_ENTRIES} intervals, not {n}")
    entries = _entries_at(ends)
    entries["t1"], entries["t2"], entries["t3"] = 0x11, 0x06, 0x06
    entries["status"] = _column("status", status, n, 0xFF)
    entries["register"] = _column("register_wh", register_wh, n, 0xFFFFFFFF)
    entries["value"] = _column("interval_wh", interval_wh, n, 0xFFFFFFFF)
    return (
        BODY_HEAD
        + system_title
        + b"\x09\x06"
        + PROFILE_OBIS
        + b"\x01"
        + encode_length(n)
        + entries.tobytes()
    )


def _entries_at(ends: NDArray[np.int64]) -> NDArray[np.void]:
    """Entries whose date-time (deviation 0, hundredths and clock status 0) is ``ends``."""
    days, secs = np.divmod(ends, 86400)
    dates = np.datetime64("1970-01-01", "D") + days
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    if years.min() < _MIN_YEAR or years.max() > _MAX_YEAR:
        raise ValueError(f"interval ends must fall in the years {_MIN_YEAR} to {_MAX_YEAR}")
    entries = np.zeros(len(ends), dtype=ENTRY_DTYPE)
    entries["h"] = np.frombuffer(bytes((0x02, 0x04, 0x09, 0x0C)), dtype="V4")[0]
    entries["year"] = years
    entries["month"] = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    entries["day"] = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    entries["dow"] = (days + 3) % 7 + 1  # 1970-01-01 was a Thursday; Monday is 1
    entries["hour"] = secs // 3600
    entries["minute"] = secs // 60 % 60
    entries["second"] = secs % 60
    return entries


def decode_body(body: bytes) -> Profile:
    """Decode a profile body: the fast path when the layout is this profile's, else generic.

    Anything that is not a profile body is :attr:`Reason.MALFORMED` (the body was
    authenticated, so nothing was lost on the way: the meter sent it so)."""
    if len(body) < 22 or body[:4] != BODY_HEAD or body[12:20] != b"\x09\x06" + PROFILE_OBIS:
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
    entries = np.frombuffer(body, dtype=ENTRY_DTYPE, count=n, offset=pos)
    raw = np.frombuffer(body, dtype=np.uint8, count=n * ENTRY_SIZE, offset=pos).reshape(
        n, ENTRY_SIZE
    )
    if not (raw[:, ENTRY_FIXED_AT] == ENTRY_FIXED_IS).all():
        return _decode_generic(body)
    return Profile(body[4:12], _checked_times(entries), *_entry_values(entries))


def _entry_values(
    entries: NDArray[np.void],
) -> tuple[NDArray[np.uint8], NDArray[np.uint32], NDArray[np.uint32]]:
    return (
        entries["status"].astype(np.uint8),
        entries["register"].astype(np.uint32),
        entries["value"].astype(np.uint32),
    )


def _time_fields(entries: NDArray[np.void]) -> NDArray[np.int64]:
    """Bytes 4..14 of each entry: year(2) month day dow hour minute second hundredths dev(2)."""
    raw = np.ascontiguousarray(entries).view(np.uint8).reshape(-1, ENTRY_SIZE)
    return raw[:, 4:15].astype(np.int64)


def _valid_times(entries: NDArray[np.void]) -> NDArray[np.bool_]:
    """Which entries hold a specified, real date and time of day, deviation 0 or 0x8000."""
    f = _time_fields(entries)
    year, day = f[:, 0] * 256 + f[:, 1], f[:, 3]
    leap = ((year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))).astype(np.int64)
    fields = f[:, _RANGE_COLUMNS]
    ok = ((fields >= _RANGE_LOW) & (fields <= _RANGE_HIGH)).all(axis=1)
    month = np.where(ok, f[:, 2], 1)
    ok &= (year != _YEAR_NOT_SPECIFIED) & (day <= _MONTH_DAYS[leap, month])
    ok &= (f[:, 10] == 0) & ((f[:, 9] == 0) | (f[:, 9] == 0x80))  # deviation 0 or 0x8000
    return np.asarray(ok, dtype=np.bool_)


def _entry_times(entries: NDArray[np.void]) -> NDArray[np.int64]:
    """Epoch seconds of the entries' date-times, fields unchecked: see :func:`_valid_times`."""
    f = _time_fields(entries)
    year, month, day = f[:, 0] * 256 + f[:, 1], np.clip(f[:, 2], 1, 12), f[:, 3]
    leap = ((year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))).astype(np.int64)
    before = year - 1
    days = (
        365 * (year - 1970)
        + before // 4
        - before // 100
        + before // 400
        - _LEAP_DAYS_BEFORE_1970
        + _DAYS_BEFORE_MONTH[leap, month]
        + day
        - 1
    )
    return np.asarray(days * 86400 + f[:, 5] * 3600 + f[:, 6] * 60 + f[:, 7], dtype=np.int64)


def _checked_times(entries: NDArray[np.void]) -> NDArray[np.int64]:
    """:func:`_entry_times`, or :attr:`Reason.MALFORMED` naming the first entry that fails."""
    ok = _valid_times(entries)
    if not ok.all():
        bad = int(np.argmin(ok))
        stamp = np.ascontiguousarray(entries[bad : bad + 1]).tobytes()[4:16]
        raise FrameRejected(
            Reason.MALFORMED, f"interval {bad}: not a UTC COSEM date-time ({stamp.hex()})"
        )
    return _entry_times(entries)


class _Parser(dlms_data.DlmsDataParser):  # type: ignore[misc]  # dlms-cosem is untyped
    """dlms-cosem's A-XDR parser, except that a ``date-time`` (type 25) keeps its 12 raw bytes
    (dlms-cosem would apply the deviation and read wildcards as 0), so that both paths judge
    interval times by :func:`_valid_times`."""

    def parse_one_entry(self) -> Any:
        if self.buffer[self.pointer : self.pointer + 1] == bytes((_TYPE_DATE_TIME,)):
            self.pointer += 1
            return dlms_data.OctetStringData(bytes(self.get_bytes(12)))
        return super().parse_one_entry()


def _decode_generic(body: bytes) -> Profile:
    """Parse with dlms-cosem's A-XDR parser, then check the profile's shape."""
    _check_extent(body)
    try:
        root = _Parser().parse(body, limit=1)[0]
    except Exception as exc:  # dlms-cosem raises many kinds on bad bytes
        raise FrameRejected(Reason.MALFORMED, f"body is not A-XDR data: {exc!r}") from None
    title, array = _profile_parts(root)
    fields = [_entry_fields(i, entry) for i, entry in enumerate(array)]
    times = b"".join(bytes(4) + f[0] + bytes(12) for f in fields)
    return Profile(
        title,
        _checked_times(np.frombuffer(times, dtype=ENTRY_DTYPE)),
        np.asarray([f[1] for f in fields], dtype=np.uint8),
        np.asarray([f[2] for f in fields], dtype=np.uint32),
        np.asarray([f[3] for f in fields], dtype=np.uint32),
    )


def _profile_parts(root: Any) -> tuple[bytes, list[Any]]:
    """The system title and the entries of a parsed body, or :attr:`Reason.MALFORMED`."""
    if not isinstance(root, dlms_data.DataStructure) or len(root.value) != 3:
        raise FrameRejected(Reason.MALFORMED, "body is not a structure of 3 elements")
    title, obis, array = root.value
    if not _is_octets(title, SYSTEM_TITLE_LENGTH):
        raise FrameRejected(Reason.MALFORMED, "body's first element is not an 8-byte title")
    if not _is_octets(obis, len(PROFILE_OBIS)) or bytes(obis.value) != PROFILE_OBIS:
        raise FrameRejected(Reason.MALFORMED, "body's second element is not OBIS 1.0.99.1.0.255")
    if not isinstance(array, dlms_data.DataArray) or not 1 <= len(array.value) <= MAX_ENTRIES:
        raise FrameRejected(Reason.MALFORMED, f"profile buffer is not an array of 1..{MAX_ENTRIES}")
    return bytes(title.value), list(array.value)


def _is_octets(element: Any, size: int) -> bool:
    return isinstance(element, dlms_data.OctetStringData) and len(element.value) == size


_ENTRY_KINDS = (
    dlms_data.UnsignedIntegerData,
    dlms_data.DoubleLongUnsignedData,
    dlms_data.DoubleLongUnsignedData,
)


def _entry_fields(i: int, entry: Any) -> tuple[bytes, int, int, int]:
    """(raw date-time, status, register, value) of one parsed entry."""
    fields = entry.value if isinstance(entry, dlms_data.DataStructure) else None
    if fields is None or len(fields) != 4:
        raise FrameRejected(Reason.MALFORMED, f"interval {i} is not a structure of 4")
    if not _is_octets(fields[0], 12):
        raise FrameRejected(Reason.MALFORMED, f"interval {i}: time is not a 12-byte date-time")
    if not all(isinstance(f, k) for f, k in zip(fields[1:], _ENTRY_KINDS, strict=True)):
        raise FrameRejected(Reason.MALFORMED, f"interval {i} has the wrong value types")
    return bytes(fields[0].value), int(fields[1].value), int(fields[2].value), int(fields[3].value)


def _check_extent(body: bytes) -> None:
    """Walk the first A-XDR element of ``body`` before dlms-cosem parses it.

    dlms-cosem reads past the end as zero bytes and believes any array count, so a 6-byte
    body announcing 2^32 elements would keep it busy for hours. This walk costs at most one
    step per byte: it refuses an element that runs past the end, a container nested deeper
    than a profile, a type a profile never holds, and bytes after the element."""
    try:
        end = _walk(body, 0, 0)
    except IndexError:
        raise FrameRejected(Reason.MALFORMED, "body is cut short") from None
    except ValueError as exc:
        raise FrameRejected(Reason.MALFORMED, f"body has a bad A-XDR length: {exc}") from None
    if end != len(body):
        raise FrameRejected(Reason.MALFORMED, f"{len(body) - end} bytes after the profile body")


def _walk(body: bytes, pos: int, depth: int) -> int:
    """Position after the A-XDR element at ``pos``; IndexError when it runs past the end."""
    tag = body[pos]
    pos += 1
    if tag in (1, 2):  # array, structure
        if depth >= _MAX_DEPTH:
            raise FrameRejected(Reason.MALFORMED, "body nests deeper than a profile")
        count, pos = decode_length(body, pos)
        for _ in range(count):  # each element takes at least its tag byte
            pos = _walk(body, pos, depth + 1)
        return pos
    if tag in (9, 10):  # octet-string, visible-string
        size, pos = decode_length(body, pos)
    elif tag in _FIXED_SIZES:
        size = _FIXED_SIZES[tag]
    else:
        raise FrameRejected(Reason.MALFORMED, f"A-XDR type {tag} not expected in a profile")
    if pos + size > len(body):
        raise IndexError(f"type {tag} element runs past the end")
    return pos + size
