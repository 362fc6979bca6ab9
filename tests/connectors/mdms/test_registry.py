"""The meter and customer register: keys stored only wrapped, key and customer files refused
whole with their line numbers, personal data sealed per customer, KEK rotation (C1.6, C1.7,
R1.3).

Every test runs on SQLite and PostgreSQL (the ``mdms`` fixture). "Nowhere in the database" is
checked by reading every cell of every table, as bytes and as text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from sqlalchemy import func, select, text

from broker.customers.models import Customer
from broker.errors import KeyError_
from broker.keys.service import DataKeys, KeyDestroyed
from broker.kit.envelope import EnvelopeError
from broker.schema.tables import metadata
from connectors.mdms.ingest import IngestPipeline
from connectors.mdms.keyfile import KeyFileError, read_customer_file, read_key_file
from connectors.mdms.models import Meter, MeterKey
from connectors.mdms.readings import read_days
from connectors.mdms.registry import MeterRegistry, ProvisioningError
from connectors.meters.files import write_customers, write_keyfile
from connectors.meters.keys import MeterKeys
from connectors.meters.simulator import Fleet
from tests.connectors.mdms.conftest import Mdms
from tests.connectors.mdms.factory import DAY0, DAY0_NO, TestMeter, key_rows

SEED = 20261101
HEADER = "system_title,encryption_key,authentication_key,customer_ref,feeder,postcode,master_key"
# RFC 3394, 4.1: 128-bit key data wrapped with a 128-bit KEK.
RFC3394_KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
RFC3394_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
RFC3394_WRAPPED = bytes.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")


# ---- helpers ---------------------------------------------------------------------------------


def cells(mdms: Mdms) -> list[bytes]:
    """Every non-null cell of every table, as bytes (text encoded as UTF-8)."""
    out: list[bytes] = []
    with mdms.db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        out.append(bytes(value))
                    elif isinstance(value, str):
                        out.append(value.encode())
    return out


def assert_nowhere(mdms: Mdms, secrets: list[bytes]) -> None:
    stored = cells(mdms)
    assert stored
    for secret in secrets:
        forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
        found = [c for c in stored for f in forms if f in c]
        assert not found, f"{secret.hex()} is stored in the clear"


def count(mdms: Mdms, table: type[Any]) -> int:
    with mdms.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def stored_nothing(mdms: Mdms) -> bool:
    return all(count(mdms, t) == 0 for t in (Meter, MeterKey, Customer))


def key_line(m: TestMeter, **change: str) -> str:
    fields = {
        "system_title": m.meter_id,
        "encryption_key": m.ek.hex(),
        "authentication_key": m.ak.hex(),
        "customer_ref": m.customer,
        "feeder": m.feeder,
        "postcode": "AB1 2CD",
        "master_key": m.mk.hex() if m.mk else "",
    } | change
    return ",".join(fields.values())


def write(tmp_path: Path, *lines: str, name: str = "keys.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def provision_file(mdms: Mdms, path: Path, transport_key: bytes | None = None) -> dict[str, int]:
    """What ``broker meters provision`` does: read the whole file, then store it in one go."""
    rows = read_key_file(path, transport_key)
    with mdms.db.transaction() as session:
        return mdms.registry.provision(session, rows, "test", path.name)


def accepted(mdms: Mdms, frame: bytes) -> bool:
    return mdms.ingest(frame).answers[0].status == "accepted"


def restarted(mdms: Mdms) -> Mdms:
    """The same MDMS after a restart: nothing unwrapped is cached any more."""
    data_keys = DataKeys(mdms.provider, mdms.audit, mdms.clock, mdms.hasher)
    registry = MeterRegistry(mdms.provider, data_keys, mdms.audit, mdms.clock, mdms.hasher)
    pipeline = IngestPipeline(registry, data_keys, mdms.audit, mdms.clock, mdms.hasher)
    return Mdms(
        mdms.db, mdms.clock, mdms.provider, mdms.audit, data_keys, registry, pipeline, mdms.hasher
    )


# ---- meter keys --------------------------------------------------------------------------------


def test_R1_3_meter_keys_are_stored_only_wrapped_nowhere_in_the_clear(
    mdms: Mdms, tmp_path: Path
) -> None:
    meters = [TestMeter(i) for i in range(1, 6)]
    path = write(tmp_path, HEADER, *(key_line(m) for m in meters))
    assert provision_file(mdms, path) == {
        "provisioned": 5,
        "unchanged": 0,
        "customers_created": 5,
        "master_keys_added": 0,
    }
    assert count(mdms, MeterKey) == 5
    with mdms.db.engine.connect() as conn:
        blobs = conn.execute(
            text("SELECT encryption_wrapped, authentication_wrapped, master_wrapped FROM meter_key")
        ).all()
    assert all(b is not None and len(bytes(b)) > 16 for row in blobs for b in row)
    assert_nowhere(mdms, [k for m in meters for k in (m.ek, m.ak, m.mk) if k is not None])
    assert accepted(mdms, meters[0].push_day(0))  # and they still verify the meter's frames


def test_C1_6_a_key_file_wrapped_under_a_transport_key_rfc_3394_is_unwrapped(
    tmp_path: Path,
) -> None:
    meter = TestMeter(1)
    assert meter.mk is not None
    wrapped = {
        "encryption_key": RFC3394_WRAPPED.hex(),
        "authentication_key": aes_key_wrap(RFC3394_KEK, meter.ak).hex(),
        "master_key": aes_key_wrap(RFC3394_KEK, meter.mk).hex().upper(),
    }
    (row,) = read_key_file(write(tmp_path, HEADER, key_line(meter, **wrapped)), RFC3394_KEK)
    assert (row.encryption_key, row.authentication_key, row.master_key) == (
        RFC3394_KEY,
        meter.ak,
        meter.mk,
    )


def test_C1_6_a_fleet_provisioned_from_a_transport_key_file_has_its_frames_accepted(
    mdms: Mdms, tmp_path: Path
) -> None:
    fleet = Fleet.create(4, SEED)
    transport = bytes(range(32))
    path = tmp_path / "vendor.csv"
    write_keyfile(path, fleet.meters, transport)
    assert provision_file(mdms, path, transport)["provisioned"] == 4
    day1 = dt.datetime.fromtimestamp(DAY0 + 86_400, dt.UTC)
    result = mdms.ingest(*(f for _m, f in fleet.frames(day1)))
    assert [a.status for a in result.answers] == ["accepted"] * 4
    assert_nowhere(mdms, [k for m in fleet.meters for k in keys_of(m.keys)])


def keys_of(keys: MeterKeys) -> list[bytes]:
    return [keys.encryption_key, keys.authentication_key, keys.master_key]


M1, M2, M3 = TestMeter(1), TestMeter(2), TestMeter(3)
BAD_KEY_FILES: dict[str, tuple[list[str], str]] = {
    "bad hex": ([key_line(M1), key_line(M2, encryption_key="zz" * 16)], "line 3: encryption_key"),
    "odd hex": ([key_line(M1, authentication_key=M1.ak.hex()[:-1])], "line 2: authentication"),
    "15-byte key": ([key_line(M1, authentication_key=M1.ak.hex()[:30])], "line 2: authentication"),
    "17-byte key": ([key_line(M1, encryption_key=M1.ek.hex() + "00")], "line 2: encryption_key"),
    "short master key": ([key_line(M1, master_key="0011")], "line 2: master_key must be 16"),
    "7-byte title": ([key_line(M1, system_title=M1.meter_id[:14])], "line 2: system_title"),
    "title not hex": ([key_line(M1, system_title="XSM0000000000001")], "line 2: system_title"),
    "empty key": ([key_line(M1, encryption_key="")], "line 2: encryption_key"),
    "bad customer": ([key_line(M1, customer_ref="CUST 1")], "line 2: customer_ref"),
    "bad postcode": ([key_line(M1, postcode="AB1-2CD")], "line 2: postcode"),
    "missing columns": ([key_line(M1), M2.meter_id + "," + M2.ek.hex()], "line 3: "),
    "duplicate meter": (
        [key_line(M1), key_line(M2), key_line(M1, customer_ref="CUST-X")],
        f"line 4: meter {M1.meter_id} repeats line 2",
    ),
    "blank lines count": (["", key_line(M1), "", key_line(M2, encryption_key="0g")], "line 5: "),
    "every bad line": (
        [key_line(M1, encryption_key="00"), key_line(M2), key_line(M3, master_key="xx")],
        "line 2: encryption_key must be 16 bytes (32 hex digits); line 4: master_key is not hex",
    ),
}


@pytest.mark.parametrize(("lines", "message"), BAD_KEY_FILES.values(), ids=BAD_KEY_FILES.keys())
def test_C1_6_a_bad_key_file_names_its_lines_and_nothing_is_stored(
    mdms: Mdms, tmp_path: Path, lines: list[str], message: str
) -> None:
    path = write(tmp_path, HEADER, *lines)
    with pytest.raises(KeyFileError) as refused:
        provision_file(mdms, path)
    assert message in str(refused.value)
    assert str(refused.value).endswith("nothing was stored")
    assert stored_nothing(mdms)


BAD_HEADERS = {
    "no postcode": HEADER.replace(",postcode", ""),
    "reordered": HEADER.replace(
        "encryption_key,authentication_key", "authentication_key,encryption_key"
    ),
    "unknown column": HEADER + ",comment",
    "no header": key_line(M2),
    "empty file": "",
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_a_key_file_with_another_header_is_refused_whole(
    mdms: Mdms, tmp_path: Path, header: str
) -> None:
    path = write(tmp_path, header, key_line(M1))
    with pytest.raises(KeyFileError, match="header must be"):
        provision_file(mdms, path)
    assert stored_nothing(mdms)


def test_a_key_file_without_meters_is_refused(mdms: Mdms, tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no meters"):
        provision_file(mdms, write(tmp_path, HEADER))


TRANSPORT = bytes(range(16))


@pytest.mark.parametrize(
    ("written_with", "read_with", "message"),
    [
        (TRANSPORT, bytes(16), "line 2: encryption_key does not unwrap under the transport key"),
        (TRANSPORT, None, "line 2: encryption_key must be 16 bytes"),
        (None, TRANSPORT, "line 2: encryption_key must be 24 bytes"),
    ],
    ids=["wrong transport key", "wrapped read as clear", "clear read as wrapped"],
)
def test_C1_6_transport_key_mismatches_are_refused_and_nothing_is_stored(
    mdms: Mdms,
    tmp_path: Path,
    written_with: bytes | None,
    read_with: bytes | None,
    message: str,
) -> None:
    fleet = Fleet.create(2, SEED)
    path = tmp_path / "vendor.csv"
    write_keyfile(path, fleet.meters, written_with)
    with pytest.raises(KeyFileError) as refused:
        provision_file(mdms, path, read_with)
    assert message in str(refused.value) and "line 3:" in str(refused.value)
    assert stored_nothing(mdms)


def test_C1_6_a_transport_key_of_a_wrong_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="16, 24 or 32 bytes"):
        read_key_file(write(tmp_path, HEADER, key_line(M1)), bytes(15))


# ---- re-provisioning -----------------------------------------------------------------------


def test_C1_6_provisioning_the_same_meters_again_changes_nothing(
    mdms: Mdms, tmp_path: Path
) -> None:
    path = write(tmp_path, HEADER, key_line(M1), key_line(M2))
    provision_file(mdms, path)
    with mdms.db.engine.connect() as conn:
        before = conn.execute(text("SELECT * FROM meter_key ORDER BY meter_id")).all()
    again = provision_file(mdms, path)
    assert again == {
        "provisioned": 0,
        "unchanged": 2,
        "customers_created": 0,
        "master_keys_added": 0,
    }
    with mdms.db.engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM meter_key ORDER BY meter_id")).all() == before
    assert mdms.audit_types().count("mdms.meters_provisioned") == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encryption_key": bytes(16).hex()}, "is provisioned with other keys"),
        ({"authentication_key": bytes(16).hex()}, "is provisioned with other keys"),
        ({"customer_ref": "CUST-OTHER"}, "belongs to another customer"),
    ],
    ids=["encryption key", "authentication key", "customer"],
)
def test_C1_6_provisioning_a_meter_again_with_other_keys_is_refused_and_nothing_is_stored(
    mdms: Mdms, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    mdms.provision(M1)
    path = write(tmp_path, HEADER, key_line(M3), key_line(M1, **change))
    with pytest.raises(ProvisioningError) as refused:
        provision_file(mdms, path)
    assert f"line 3: meter {M1.meter_id} {message}" in str(refused.value)
    assert count(mdms, Meter) == 1  # meter 3, new and valid, was not stored either
    frame = TestMeter(1, M1.ek, M1.ak, ic=50).push_day(0)
    assert accepted(mdms, frame)  # the keys on file are still the first ones


# ---- customers -------------------------------------------------------------------------------


def import_customers(mdms: Mdms, path: Path) -> dict[str, int]:
    rows = read_customer_file(path)
    with mdms.db.transaction() as session:
        return mdms.registry.import_customers(session, rows, "test", path.name)


def record(mdms: Mdms, customer_ref: str) -> dict[str, str | None]:
    with mdms.db.transaction() as session:
        return mdms.registry.customer_record(session, customer_ref)


def test_C1_7_customer_import_seals_name_address_and_account(mdms: Mdms, tmp_path: Path) -> None:
    fleet = Fleet.create(3, SEED)
    with mdms.db.transaction() as session:
        mdms.registry.provision(session, key_rows(fleet.meters), "test", "test")
    path = tmp_path / "customers.csv"
    write_customers(path, fleet.meters)
    assert import_customers(mdms, path) == {"customers": 3, "created": 0}
    people = [m.customer() for m in fleet.meters]
    assert_nowhere(
        mdms,
        [v.encode() for c in people for v in (c.name, c.address, c.account_number)],
    )
    for c in people:
        assert record(mdms, c.customer_ref) == {
            "customer_ref": c.customer_ref,
            "name": c.name,
            "address": c.address,
            "account": c.account_number,
        }
    assert "mdms.customers_imported" in mdms.audit_types()


def test_C1_7_a_sealed_field_moved_to_another_field_or_customer_does_not_open(
    mdms: Mdms, tmp_path: Path
) -> None:
    mdms.provision(M1, M2)
    path = write(
        tmp_path,
        "customer_ref,name,address,account_number",
        f"{M1.customer},Alex Example,1 Sample Road,ACC1",
        f"{M2.customer},Sam Testperson,2 Mock Close,ACC2",
        name="customers.csv",
    )
    import_customers(mdms, path)
    moves: list[tuple[Callable[[Any, Any], None], str]] = [
        (lambda a, b: setattr(a, "address_sealed", a.name_sealed), M1.customer),
        (lambda a, b: setattr(b, "name_sealed", a.name_sealed), M2.customer),
    ]
    for move, victim in moves:
        with mdms.db.transaction() as session:
            a, b = session.get(Customer, M1.customer), session.get(Customer, M2.customer)
            move(a, b)
            session.add_all([a, b])
        with pytest.raises(EnvelopeError):
            record(mdms, victim)
        import_customers(mdms, path)  # the right blocks back
        assert record(mdms, victim)["name"] in ("Alex Example", "Sam Testperson")


def test_C1_7_destroying_the_customer_data_key_makes_personal_data_and_readings_unreadable(
    mdms: Mdms, tmp_path: Path
) -> None:
    mdms.provision(M1, M2)
    path = write(
        tmp_path,
        "customer_ref,name,address,account_number",
        f"{M1.customer},Alex Example,1 Sample Road,ACC1",
        f"{M2.customer},Sam Testperson,2 Mock Close,ACC2",
        name="customers.csv",
    )
    import_customers(mdms, path)
    meter = TestMeter(1, M1.ek, M1.ak, ic=100)
    assert accepted(mdms, meter.push_day(0))
    with mdms.db.transaction() as session:
        assert mdms.data_keys.destroy(session, M1.customer, "test", "erasure") == 1
    with pytest.raises(KeyDestroyed):
        record(mdms, M1.customer)
    with mdms.db.transaction() as session, pytest.raises(KeyDestroyed):
        read_days(session, mdms.data_keys, M1.meter_id, DAY0_NO, DAY0_NO)
    assert record(mdms, M2.customer)["name"] == "Sam Testperson"  # the other is untouched
    with pytest.raises(ProvisioningError, match="was erased"):
        import_customers(mdms, path)


def test_a_bad_customer_file_names_its_lines_and_nothing_is_stored(
    mdms: Mdms, tmp_path: Path
) -> None:
    mdms.provision(M1)
    path = write(
        tmp_path,
        "customer_ref,name,address,account_number",
        f"{M1.customer},Alex Example,1 Sample Road,ACC1",
        "",
        "bad ref,Sam,Road,ACC2",
        f"{M1.customer},,1 Sample Road,ACC1",
        name="customers.csv",
    )
    with pytest.raises(KeyFileError) as refused:
        import_customers(mdms, path)
    assert "line 4: customer_ref" in str(refused.value)
    assert "line 5: name, address and account_number" in str(refused.value)
    assert record(mdms, M1.customer)["name"] is None


# ---- KEK rotation ----------------------------------------------------------------------------


def rotate_kek(mdms: Mdms, rewrap: bool = True) -> tuple[str, str, int]:
    """Add a KEK version, re-wrap meter and data keys under it, retire the old one."""
    old = mdms.provider.current_kek_id()
    new = mdms.provider.add_version()
    rows = 0
    if rewrap:
        with mdms.db.transaction() as session:
            rows = mdms.registry.rewrap_all(session, "test")
            mdms.data_keys.rewrap_all(session, "test")
    mdms.provider.retire(old)
    return old, new, rows


def test_C1_6_kek_rotation_keeps_meter_keys_usable_after_the_old_kek_is_retired(
    mdms: Mdms,
) -> None:
    meters = [TestMeter(1), TestMeter(2, mk=None)]
    mdms.provision(*meters)
    assert accepted(mdms, meters[0].push_day(0))
    with mdms.db.engine.connect() as conn:
        before = conn.execute(text("SELECT encryption_wrapped FROM meter_key")).scalars().all()
    old, new, rows = rotate_kek(mdms)
    assert rows == 2
    after = restarted(mdms)  # nothing unwrapped under the old KEK is cached
    assert [after.ingest(m.push_day(1)).answers[0].status for m in meters] == ["accepted"] * 2
    with mdms.db.transaction() as session:
        assert after.registry.usage_by_kek(session) == {new: 2}
        days = read_days(session, after.data_keys, meters[0].meter_id, DAY0_NO, DAY0_NO + 1)
    assert [d.day for d in days] == [DAY0_NO, DAY0_NO + 1]
    with mdms.db.engine.connect() as conn:
        now = conn.execute(text("SELECT encryption_wrapped FROM meter_key")).scalars().all()
    assert set(now).isdisjoint(before)
    assert_nowhere(mdms, [k for m in meters for k in (m.ek, m.ak, m.mk) if k is not None])
    assert "mdms.meter_keys_rewrapped" in mdms.audit_types()
    assert old not in mdms.provider.kek_ids()


def test_C1_6_retiring_a_kek_without_rewrapping_leaves_the_meter_keys_unreadable(
    mdms: Mdms,
) -> None:
    """The control for the test above: it is the re-wrap that keeps the keys."""
    meter = TestMeter(1)
    mdms.provision(meter)
    rotate_kek(mdms, rewrap=False)
    with pytest.raises(KeyError_, match="not available"):
        restarted(mdms).ingest(meter.push_day(1))


def test_C1_6_a_master_key_given_later_is_stored_and_another_one_is_refused(
    mdms: Mdms, tmp_path: Path
) -> None:
    """A meter first provisioned without its master key can get it from a later key file (so
    its keys can be rotated); a key file naming another master key is refused whole."""
    fleet = Fleet.create(2, 5)
    without = key_rows(fleet.meters, master=False)
    with mdms.db.transaction() as session:
        mdms.registry.provision(session, without, "test", "test")
    with mdms.db.transaction() as session:
        report = mdms.registry.provision(session, key_rows(fleet.meters), "test", "test")
    assert (report["unchanged"], report["master_keys_added"]) == (2, 2)
    with mdms.db.engine.connect() as conn:
        stored = conn.execute(text("SELECT count(master_wrapped) FROM meter_key")).scalar_one()
    assert stored == 2
    other = [dataclasses.replace(r, master_key=os.urandom(16)) for r in key_rows(fleet.meters)]
    with pytest.raises(ProvisioningError, match="another master key"), mdms.db.transaction() as s:
        mdms.registry.provision(s, other, "test", "test")
