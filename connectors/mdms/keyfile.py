"""Meter key files as vendors deliver them, and customer files (C1.6).

A key file is CSV with the header
``system_title,encryption_key,authentication_key,customer_ref,feeder,postcode`` and the optional
columns ``master_key`` (the meter's key-encryption key, needed to rotate its keys later) and
``interval_s`` (the profile's capture period: 60 to 3600 s, dividing an hour; 900 if absent). Keys
are hex: 16 bytes in the clear, or 24 bytes when wrapped under a transport key with the AES key
wrap of RFC 3394, as vendors ship them. A customer file is CSV
``customer_ref,name,address,account_number`` (no control characters; an address may span
lines; a name holds no invisible formatting). Every problem is reported with its line number in
the file (blank lines count, as in an editor; a quoted field spanning lines gives the line the
row ends on), and a file with any bad line is refused whole.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from broker.errors import BrokerError
from broker.kit.text import text_problem

KEY_COLUMNS = (
    "system_title",
    "encryption_key",
    "authentication_key",
    "customer_ref",
    "feeder",
    "postcode",
)
OPTIONAL_KEY_COLUMNS = ("master_key", "interval_s")
"""Columns a key file may add after ``KEY_COLUMNS``, in this order."""
CUSTOMER_COLUMNS = ("customer_ref", "name", "address", "account_number")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_POSTCODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ]{0,15}")
_HEX = re.compile(r"[0-9A-Fa-f]*")
MAX_ERRORS_SHOWN = 20
DEFAULT_INTERVAL_S = 900
INTERVALS_S = (60, 300, 600, 900, 1800, 3600)
"""Profile capture periods a meter may have: each divides an hour, so a day."""


class KeyFileError(BrokerError):
    """A key or customer file is malformed; nothing of it was stored."""


@dataclass(frozen=True)
class MeterKeyRow:
    line: int
    meter_id: str
    encryption_key: bytes
    authentication_key: bytes
    master_key: bytes | None
    customer_ref: str
    feeder: str
    postcode: str
    interval_s: int = DEFAULT_INTERVAL_S


@dataclass(frozen=True)
class CustomerRow:
    line: int
    customer_ref: str
    name: str
    address: str
    account_number: str


def _fail(path: Path, errors: list[str]) -> KeyFileError:
    shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
    more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
    return KeyFileError(f"{path}: {shown}{more}; nothing was stored")


def _rows(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> csv.DictReader[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(reader.fieldnames or ())
    if header[: len(required)] != required or not set(header[len(required) :]) <= set(optional):
        raise KeyFileError(f"{path}: header must be {','.join(required + optional)}, not {header}")
    return reader


def _key(value: str, transport_key: bytes | None, what: str) -> bytes:
    value = value.strip()
    if not _HEX.fullmatch(value):
        raise ValueError(f"{what} is not hex")
    raw = bytes.fromhex(value) if len(value) % 2 == 0 else b"?"
    if transport_key is None:
        if len(raw) != 16:
            raise ValueError(f"{what} must be 16 bytes (32 hex digits)")
        return raw
    if len(raw) != 24:
        raise ValueError(f"{what} must be 24 bytes (48 hex digits) wrapped under the transport key")
    try:
        return aes_key_unwrap(transport_key, raw)
    except InvalidUnwrap:
        raise ValueError(f"{what} does not unwrap under the transport key") from None


def _meter_row(line: int, raw: dict[str, str], transport_key: bytes | None) -> MeterKeyRow:
    title = (raw.get("system_title") or "").strip()
    if not _HEX.fullmatch(title) or len(title) != 16:
        raise ValueError("system_title must be 8 bytes (16 hex digits)")
    ref, feeder, postcode = (
        (raw.get(k) or "").strip() for k in ("customer_ref", "feeder", "postcode")
    )
    if not _REF.fullmatch(ref) or not _REF.fullmatch(feeder):
        raise ValueError("customer_ref and feeder are 1-64 of A-Z a-z 0-9 . _ -")
    if not _POSTCODE.fullmatch(postcode):
        raise ValueError("postcode is 1-16 letters, digits and spaces")
    master = (raw.get("master_key") or "").strip()
    interval = (raw.get("interval_s") or "").strip() or str(DEFAULT_INTERVAL_S)
    if not interval.isdigit() or int(interval) not in INTERVALS_S:
        raise ValueError(f"interval_s is one of {', '.join(map(str, INTERVALS_S))} seconds")
    return MeterKeyRow(
        line,
        title.upper(),
        _key(raw["encryption_key"] or "", transport_key, "encryption_key"),
        _key(raw["authentication_key"] or "", transport_key, "authentication_key"),
        _key(master, transport_key, "master_key") if master else None,
        ref,
        feeder,
        postcode.upper(),
        int(interval),
    )


def read_key_file(path: Path, transport_key: bytes | None = None) -> list[MeterKeyRow]:
    """The meters of a key file, or :class:`KeyFileError` listing every bad line."""
    if transport_key is not None and len(transport_key) not in (16, 24, 32):
        raise KeyFileError("the transport key must be 16, 24 or 32 bytes")
    out: list[MeterKeyRow] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    reader = _rows(path, KEY_COLUMNS, OPTIONAL_KEY_COLUMNS)
    for raw in reader:
        line = reader.line_num  # not a count of rows: blank lines are skipped, not counted
        try:
            row = _meter_row(line, raw, transport_key)
        except (ValueError, TypeError, AttributeError) as exc:
            errors.append(f"line {line}: {exc}")
            continue
        if row.meter_id in seen:
            errors.append(f"line {line}: meter {row.meter_id} repeats line {seen[row.meter_id]}")
        seen[row.meter_id] = line
        out.append(row)
    if errors:
        raise _fail(path, errors)
    if not out:
        raise KeyFileError(f"{path}: no meters in the file")
    return out


def _customer_text_problem(name: str, address: str, account_number: str) -> str | None:
    """No control characters (an address may span lines); a name free of invisible
    formatting."""
    for what, value, multiline, display in (
        ("name", name, False, True),
        ("address", address, True, False),
        ("account_number", account_number, False, False),
    ):
        problem = text_problem(value, multiline, display)
        if problem is not None:
            return f"{what} {problem}"
    return None


def read_customer_file(path: Path) -> list[CustomerRow]:
    """The customers of a customer file, or :class:`KeyFileError` listing every bad line."""
    out: list[CustomerRow] = []
    errors: list[str] = []
    reader = _rows(path, CUSTOMER_COLUMNS, ())
    for raw in reader:
        line = reader.line_num
        values = [(raw.get(k) or "").strip() for k in CUSTOMER_COLUMNS]
        if not _REF.fullmatch(values[0]):
            errors.append(f"line {line}: customer_ref is 1-64 of A-Z a-z 0-9 . _ -")
        elif not all(values[1:]) or any(len(v) > 500 for v in values[1:]):
            errors.append(f"line {line}: name, address and account_number are 1-500 characters")
        elif problem := _customer_text_problem(*values[1:]):
            errors.append(f"line {line}: {problem}")
        else:
            out.append(CustomerRow(line, *values))
    if errors:
        raise _fail(path, errors)
    return out
