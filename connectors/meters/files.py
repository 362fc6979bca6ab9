"""The files a fleet hands to the rest of the reference path: key file, customers, captures.

A utility receives a meter's keys from the manufacturer in a key file (here CSV, optionally
with every key wrapped under a transport key, RFC 3394), its customers from the billing system,
and a capture is a recording of frames on the wire for replaying into the MDMS. Writers take any
iterable and stream it, so the files of a million meters never sit in memory at once.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from connectors.mdms.keyfile import CUSTOMER_COLUMNS, KEY_COLUMNS, OPTIONAL_KEY_COLUMNS
from connectors.meters.customers import Customer
from connectors.meters.keys import MeterKeys

KEYFILE_HEADER = KEY_COLUMNS + OPTIONAL_KEY_COLUMNS
"""Every column of a key file as the MDMS reads it (``connectors.mdms.keyfile``)."""
CUSTOMERS_HEADER = CUSTOMER_COLUMNS
_KEY_COLUMNS = ("encryption_key", "authentication_key", "master_key")


class Provisioned(Protocol):
    """What the key file says about a meter."""

    @property
    def system_title(self) -> bytes: ...
    @property
    def keys(self) -> MeterKeys: ...
    @property
    def customer_ref(self) -> str: ...
    @property
    def feeder(self) -> str: ...
    @property
    def postcode(self) -> str: ...
    @property
    def interval_s(self) -> int: ...


class HasCustomer(Protocol):
    def customer(self) -> Customer: ...


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One row of a key file, keys unwrapped."""

    system_title: bytes
    keys: MeterKeys
    customer_ref: str
    feeder: str
    postcode: str


def _key_text(key: bytes, transport_key: bytes | None) -> str:
    return (key if transport_key is None else aes_key_wrap(transport_key, key)).hex()


def write_keyfile(
    path: Path | str, meters: Iterable[Provisioned], transport_key: bytes | None = None
) -> int:
    """Write the key file (keys in hex, or their RFC 3394 wraps); returns the number of rows."""
    rows = 0
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(KEYFILE_HEADER)
        for m in meters:
            k = m.keys
            ek, ak, mk = (
                _key_text(key, transport_key)
                for key in (k.encryption_key, k.authentication_key, k.master_key)
            )
            writer.writerow(
                (
                    m.system_title.hex(),
                    ek,
                    ak,
                    m.customer_ref,
                    m.feeder,
                    m.postcode,
                    mk,
                    m.interval_s,
                )
            )
            rows += 1
    return rows


def read_keyfile(path: Path | str, transport_key: bytes | None = None) -> list[KeyRecord]:
    """Read a key file; with ``transport_key`` the key columns are unwrapped (RFC 3394)."""
    with Path(path).open(newline="", encoding="utf-8") as src:
        reader = csv.DictReader(src)
        if tuple(reader.fieldnames or ()) != KEYFILE_HEADER:
            raise ValueError(f"{path}: header is not {','.join(KEYFILE_HEADER)}")
        return [_key_record(row, transport_key, reader.line_num) for row in reader]


def _key_record(row: dict[str, str], transport_key: bytes | None, line: int) -> KeyRecord:
    try:
        raw = [bytes.fromhex(row[c]) for c in _KEY_COLUMNS]
        if transport_key is not None:
            raw = [aes_key_unwrap(transport_key, k) for k in raw]
        return KeyRecord(
            bytes.fromhex(row["system_title"]),
            MeterKeys(*raw),
            row["customer_ref"],
            row["feeder"],
            row["postcode"],
        )
    except (ValueError, InvalidUnwrap) as exc:
        raise ValueError(f"key file line {line}: {str(exc) or type(exc).__name__}") from None


def write_customers(path: Path | str, meters: Iterable[HasCustomer]) -> int:
    """Write the synthetic customers of ``meters`` as CSV; returns the number of rows."""
    rows = 0
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CUSTOMERS_HEADER)
        for m in meters:
            c = m.customer()
            writer.writerow((c.customer_ref, c.name, c.address, c.account_number))
            rows += 1
    return rows


def read_customers(path: Path | str) -> list[Customer]:
    """Read a customers CSV written by :func:`write_customers`."""
    with Path(path).open(newline="", encoding="utf-8") as src:
        reader = csv.DictReader(src)
        if tuple(reader.fieldnames or ()) != CUSTOMERS_HEADER:
            raise ValueError(f"{path}: header is not {','.join(CUSTOMERS_HEADER)}")
        return [Customer(**row) for row in reader]


def write_capture(path: Path | str, frames: Iterable[bytes], comment: str | None = None) -> int:
    """Write one hex APDU per line after ``# comment`` lines; returns the number of frames."""
    count = 0
    with Path(path).open("w", encoding="ascii") as out:
        for line in (comment or "").splitlines():
            out.write(f"# {line}\n")
        for frame in frames:
            out.write(frame.hex() + "\n")
            count += 1
    return count


def read_capture(path: Path | str) -> list[bytes]:
    """The frames of a capture; blank and ``#`` lines are skipped, bad hex names its line."""
    frames = []
    with Path(path).open(encoding="ascii", errors="replace") as src:
        for number, line in enumerate(src, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                frames.append(bytes.fromhex(text))
            except ValueError:
                raise ValueError(f"{path}, line {number}: not a hex APDU") from None
    return frames
