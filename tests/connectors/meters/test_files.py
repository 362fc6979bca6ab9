"""Key file, customers and captures: what the fleet hands to the MDMS and the demo."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from connectors.meters.files import (
    CUSTOMERS_HEADER,
    KEYFILE_HEADER,
    read_capture,
    read_customers,
    read_keyfile,
)
from connectors.meters.simulator import Fleet, write_capture, write_customers, write_keyfile
from tests.connectors.meters.helpers import MONDAY, SEED


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as src:
        return list(csv.reader(src))


def test_a_capture_reads_back_frame_for_frame(tmp_path: Path) -> None:
    sent = [frame for _, frame in Fleet.create(3, SEED).frames(MONDAY, 1, 48)]
    path = tmp_path / "capture.hex"
    assert write_capture(path, sent, comment="fleet of 3\nMonday") == 6
    text = path.read_text()
    assert text.startswith("# fleet of 3\n# Monday\n")
    assert text.splitlines()[2] == sent[0].hex()
    assert read_capture(path) == sent


def test_a_capture_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    path = tmp_path / "hand.hex"
    path.write_text("# recorded by hand\n\n  db08  \n   # indented comment\nDB0F\n")
    assert read_capture(path) == [b"\xdb\x08", b"\xdb\x0f"]


@pytest.mark.parametrize("bad", ["db0", "zz", "db 0g"])
def test_bad_hex_in_a_capture_names_its_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.hex"
    path.write_text(f"# header\ndb08\n{bad}\n")
    with pytest.raises(ValueError, match="line 3"):
        read_capture(path)


def test_C1_6_the_key_file_reads_back_to_the_fleets_keys(tmp_path: Path) -> None:
    fleet = Fleet.create(4, SEED)
    path = tmp_path / "keys.csv"
    assert write_keyfile(path, fleet.meters) == 4
    table = rows(path)
    assert tuple(table[0]) == KEYFILE_HEADER
    assert table[1][0] == fleet.meters[0].system_title.hex()
    assert table[1][1] == fleet.meters[0].keys.encryption_key.hex()
    records = read_keyfile(path)
    assert [r.system_title for r in records] == [m.system_title for m in fleet.meters]
    assert [r.keys for r in records] == [m.keys for m in fleet.meters]
    assert [(r.customer_ref, r.feeder, r.postcode) for r in records] == [
        (m.customer_ref, m.feeder, m.postcode) for m in fleet.meters
    ]


def test_C1_6_a_transport_wrapped_key_file_holds_no_key_in_clear(tmp_path: Path) -> None:
    fleet = Fleet.create(3, SEED)
    transport = os.urandom(16)
    path = tmp_path / "keys-wrapped.csv"
    write_keyfile(path, fleet.meters, transport_key=transport)
    text = path.read_text()
    meter = fleet.meters[2]
    row = rows(path)[3]
    for key in (meter.keys.encryption_key, meter.keys.authentication_key, meter.keys.master_key):
        assert key.hex() not in text
    assert aes_key_unwrap(transport, bytes.fromhex(row[1])) == meter.keys.encryption_key
    assert aes_key_unwrap(transport, bytes.fromhex(row[2])) == meter.keys.authentication_key
    assert aes_key_unwrap(transport, bytes.fromhex(row[6])) == meter.keys.master_key
    assert [r.keys for r in read_keyfile(path, transport)] == [m.keys for m in fleet.meters]
    with pytest.raises(ValueError, match="line 2"):
        read_keyfile(path, os.urandom(16))


def test_a_key_file_with_another_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.csv"
    path.write_text("system_title,encryption_key\nabc,def\n")
    with pytest.raises(ValueError, match="header"):
        read_keyfile(path)


def test_customers_are_synthetic_deterministic_and_one_per_meter(tmp_path: Path) -> None:
    fleet = Fleet.create(30, SEED)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert write_customers(first, fleet.meters) == 30
    write_customers(second, Fleet.create(30, SEED).meters)
    assert first.read_bytes() == second.read_bytes()
    assert tuple(rows(first)[0]) == CUSTOMERS_HEADER
    customers = read_customers(first)
    assert [c.customer_ref for c in customers] == [m.customer_ref for m in fleet.meters]
    assert len({c.account_number for c in customers}) == 30
    assert all(
        c.account_number.startswith("ACC") and len(c.account_number) == 13 for c in customers
    )
    meter, customer = fleet.meters[5], customers[5]
    assert f" {meter.postcode} " in customer.address
    write_customers(second, Fleet.create(30, SEED + 1).meters)
    assert first.read_bytes() != second.read_bytes()
