"""``broker meters``, ``broker customers`` and ``broker mdms`` as an operator runs them, on files
the meter simulator writes (C1.5, C1.6, C1.7, R1.3, T2): key files plain and RFC 3394-wrapped,
refusals with line numbers that store nothing, sealed customer data whose every view is audited,
captures ingested with every line answered, stored readings with their quality flags, tallies.
The CLI runs on the system clock, so the simulated days are the days just before today."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from broker.cli.main import main
from connectors.meters.simulator import (
    Fleet,
    SimulatedMeter,
    write_capture,
    write_customers,
    write_keyfile,
)

pytestmark = pytest.mark.timeout(60)

SEED = 1332
TRANSPORT_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.create(3, SEED)


@pytest.fixture
def initialised(data_dir: Path) -> Path:
    assert main(["init"]) == 0
    return data_dir


def _day(days_ago: int) -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _run_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _refused(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 1) -> str:
    capsys.readouterr()
    assert main(list(argv)) == code
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def _keyfile(tmp_path: Path, fleet: Fleet, transport_key: bytes | None = None) -> Path:
    path = tmp_path / ("keys-wrapped.csv" if transport_key else "keys.csv")
    write_keyfile(path, fleet.meters, transport_key)
    return path


def _provision(capsys: pytest.CaptureFixture[str], tmp_path: Path, fleet: Fleet) -> Any:
    return _run_json(capsys, "meters", "provision", "--key-file", str(_keyfile(tmp_path, fleet)))


def _rows(data_dir: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "broker.db") as conn:
        return conn.execute(query).fetchall()


def _audit(data_dir: Path, event_type: str) -> list[dict[str, Any]]:
    rows = _rows(data_dir, f"SELECT body FROM audit_entry WHERE event_type = '{event_type}'")
    return [json.loads(r[0]) for r in rows]


def _database_bytes(data_dir: Path) -> bytes:
    """Everything SQLite holds on disk: the database file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("broker.db*")))


def _title(meter: SimulatedMeter) -> str:
    return meter.system_title.hex().upper()


# ---- meters provision / list -----------------------------------------------------------------


def test_C1_6_provision_from_a_simulator_key_file(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _provision(capsys, tmp_path, fleet)
    assert report == {
        "provisioned": 3,
        "unchanged": 0,
        "customers_created": 3,
        "master_keys_added": 0,
    }
    listed = _run_json(capsys, "meters", "list")
    assert [m["meter_id"] for m in listed] == sorted(_title(m) for m in fleet.meters)
    by_id = {m["meter_id"]: m for m in listed}
    for meter in fleet.meters:
        row = by_id[_title(meter)]
        assert (row["customer_ref"], row["feeder"]) == (meter.customer_ref, meter.feeder)
        assert (row["status"], row["key_version"]) == ("active", 1)
    assert "3 meters" in _run_text(capsys, "meters", "list")


def test_R1_3_meter_keys_are_stored_only_wrapped(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(capsys, tmp_path, fleet)
    stored = _database_bytes(initialised)
    assert len(_rows(initialised, "SELECT * FROM meter_key")) == 3
    for meter in fleet.meters:
        for key in (meter.keys.encryption_key, meter.keys.authentication_key):
            assert key not in stored and key.hex().encode() not in stored
            assert key.hex().upper().encode() not in stored


def test_C1_6_provision_keys_wrapped_under_a_transport_key(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """The keys are unwrapped (RFC 3394) before they are stored: the meters' frames verify."""
    transport = tmp_path / "transport.key"
    transport.write_text(TRANSPORT_KEY.hex() + "\n")
    transport.chmod(0o600)
    keyfile = _keyfile(tmp_path, fleet, TRANSPORT_KEY)
    assert len(keyfile.read_text().splitlines()[1].split(",")[1]) == 48  # 24-byte wraps
    report = _run_json(
        capsys, "meters", "provision", "--key-file", str(keyfile), "--transport-key", str(transport)
    )
    assert report["provisioned"] == 3
    capture = tmp_path / "capture.txt"
    write_capture(capture, (f for _, f in fleet.frames(_day(2), 1, push_intervals=96)))
    ingested = _run_json(capsys, "mdms", "ingest", str(capture))
    assert ingested["outcomes"] == {"accepted": 3}


def test_C1_6_wrapped_key_file_without_its_transport_key_is_refused_with_line_numbers(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    keyfile = _keyfile(tmp_path, fleet, TRANSPORT_KEY)
    err = _refused(capsys, "meters", "provision", "--key-file", str(keyfile))
    for line in (2, 3, 4):
        assert f"line {line}: encryption_key must be 16 bytes" in err
    assert "nothing was stored" in err
    assert _rows(initialised, "SELECT count(*) FROM meter") == [(0,)]


def test_C1_6_wrong_transport_key_is_refused(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    transport = tmp_path / "other.key"
    transport.write_text("ff" * 16)
    transport.chmod(0o600)
    keyfile = _keyfile(tmp_path, fleet, TRANSPORT_KEY)
    args = ("meters", "provision", "--key-file", str(keyfile), "--transport-key", str(transport))
    err = _refused(capsys, *args)
    assert "line 2: encryption_key does not unwrap under the transport key" in err
    assert _rows(initialised, "SELECT count(*) FROM meter_key") == [(0,)]


def test_R1_3_transport_key_file_readable_by_others_is_refused(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    transport = tmp_path / "transport.key"
    transport.write_text(TRANSPORT_KEY.hex())
    transport.chmod(0o644)
    keyfile = _keyfile(tmp_path, fleet, TRANSPORT_KEY)
    args = ("meters", "provision", "--key-file", str(keyfile), "--transport-key", str(transport))
    err = _refused(capsys, *args, code=2)
    assert "is readable by others (mode 644)" in err
    assert _rows(initialised, "SELECT count(*) FROM meter") == [(0,)]


def test_C1_6_bad_key_file_is_refused_with_its_line_numbers_and_nothing_stored(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    keyfile = _keyfile(tmp_path, Fleet.create(5, SEED))
    lines = keyfile.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[1], "zz" * 16)  # line 3: not hex
    lines[3] = lines[3][2:]  # line 4: a 7-byte system title
    lines[5] = lines[1]  # line 6: repeats line 2
    keyfile.write_text("\n".join(lines) + "\n")
    before = len(_rows(initialised, "SELECT seq FROM audit_entry"))
    err = _refused(capsys, "meters", "provision", "--key-file", str(keyfile))
    assert "line 3: encryption_key is not hex" in err
    assert "line 4: system_title must be 8 bytes" in err
    assert "line 6: meter" in err and "repeats line 2" in err
    assert "line 2:" not in err.replace("repeats line 2", "")  # the good lines are not blamed
    assert err.rstrip().endswith("nothing was stored")
    assert _rows(initialised, "SELECT count(*) FROM meter") == [(0,)]
    assert _rows(initialised, "SELECT count(*) FROM customer") == [(0,)]
    assert len(_rows(initialised, "SELECT seq FROM audit_entry")) == before


def test_key_file_with_a_wrong_header_is_refused(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyfile = tmp_path / "keys.csv"
    keyfile.write_text("meter,key\nXSM,00\n")
    err = _refused(capsys, "meters", "provision", "--key-file", str(keyfile))
    assert "header must be system_title,encryption_key" in err


def test_C1_6_provisioning_the_same_file_again_changes_nothing(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    keyfile = _keyfile(tmp_path, fleet)
    assert _run_text(capsys, "meters", "provision", "--key-file", str(keyfile)).startswith(
        "3 meters provisioned, 0 already known, 3 new customers"
    )
    again = _run_text(capsys, "meters", "provision", "--key-file", str(keyfile))
    assert again.startswith("0 meters provisioned, 3 already known, 0 new customers")
    assert _rows(initialised, "SELECT count(*) FROM meter_key") == [(3,)]


def test_C1_6_known_meter_with_other_keys_is_refused_not_overwritten(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(capsys, tmp_path, fleet)
    other = Fleet.create(3, SEED + 1)  # same titles, other keys
    err = _refused(capsys, "meters", "provision", "--key-file", str(_keyfile(tmp_path, other)))
    assert "is provisioned with other keys" in err and "rotate-keys" in err
    assert "nothing was stored" in err
    capture = tmp_path / "capture.txt"
    write_capture(capture, (f for _, f in fleet.frames(_day(2), 1, push_intervals=96)))
    assert _run_json(capsys, "mdms", "ingest", str(capture))["outcomes"] == {"accepted": 3}


# ---- customers -------------------------------------------------------------------------------


def test_C1_7_customers_are_stored_sealed_and_every_view_is_audited(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(capsys, tmp_path, fleet)
    customers = tmp_path / "customers.csv"
    write_customers(customers, fleet.meters)
    imported = _run_text(capsys, "customers", "import", str(customers))
    assert imported.startswith("3 customers stored (0 new)")
    person = fleet.meters[1].customer()
    shown = _run_json(capsys, "customers", "show", person.customer_ref)
    assert shown == {
        "customer_ref": person.customer_ref,
        "name": person.name,
        "address": person.address,
        "account": person.account_number,
    }
    assert f"name: {person.name}" in _run_text(capsys, "customers", "show", person.customer_ref)
    views = _audit(initialised, "mdms.customer_viewed")
    assert len(views) == 2
    assert {v["subject"] for v in views} == {views[0]["subject"]}
    assert views[0]["subject"].startswith("hs1:") and views[0]["actor"].startswith("cli:")
    stored = _database_bytes(initialised)
    for meter in fleet.meters:
        c = meter.customer()
        for value in (c.name, c.address, c.account_number):
            assert value.encode() not in stored
        assert c.customer_ref.encode() in stored  # the reference is not personal data


def test_showing_an_unknown_customer_is_a_clear_error(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no customer CUST-9999999" in _refused(capsys, "customers", "show", "CUST-9999999")
    assert _audit(initialised, "mdms.customer_viewed") == []


def test_bad_customer_file_is_refused_with_line_numbers(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "customer_ref,name,address,account_number\n"
        "CUST-1,Ada,1 Road,A-1\n"
        "bad ref!,Bob,2 Road,A-2\n"
        "CUST-3,,3 Road,A-3\n"
    )
    err = _refused(capsys, "customers", "import", str(customers))
    assert "line 3: customer_ref" in err and "line 4: name, address" in err
    assert "nothing was stored" in err
    assert _rows(initialised, "SELECT count(*) FROM customer") == [(0,)]


# ---- mdms ingest / readings / stats ----------------------------------------------------------


def _capture_with_a_bad_line(tmp_path: Path, fleet: Fleet) -> tuple[Path, int, int]:
    """Two days of hourly pushes of the fleet, a line of bad hex in the middle: (path, frames,
    the bad line's number)."""
    frames = [f for _, f in fleet.frames(_day(3), 2, push_intervals=4)]
    path = tmp_path / "capture.txt"
    write_capture(path, frames, "simulated fleet\ntwo days, hourly pushes")
    lines = path.read_text().splitlines()
    bad = 10
    lines.insert(bad - 1, "0f00 not hex")
    path.write_text("\n".join(lines) + "\n")
    return path, len(frames), bad


def test_C1_5_ingest_answers_every_line_and_a_second_ingest_is_duplicate(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(capsys, tmp_path, fleet)
    capture, frames, bad = _capture_with_a_bad_line(tmp_path, fleet)
    assert frames == 3 * 48
    first = _run_json(capsys, "mdms", "ingest", str(capture), "--batch-size", "50")
    assert first["frames"] == frames + 1
    assert first["outcomes"] == {"accepted": frames, "malformed": 1}
    assert first["readings_stored"] == frames * 4 and first["estimates"] == 0
    answer = next(a for a in first["answers"] if a["line"] == bad)
    assert (answer["status"], answer["reason"]) == ("rejected", "malformed")
    assert answer["detail"] == f"line {bad} is not hex"
    assert [a["line"] for a in first["answers"]][:3] == [3, 4, 5]  # after two comment lines
    again = _run_json(capsys, "mdms", "ingest", str(capture), "--batch-size", "50")
    assert again["outcomes"] == {"duplicate": frames, "malformed": 1}
    assert again["readings_stored"] == 0
    days = _rows(initialised, "SELECT sum(readings), count(*) FROM reading_day")
    assert days == [(3 * 2 * 96, 6)]


def test_ingest_prints_a_table_of_outcomes(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(capsys, tmp_path, fleet)
    capture, frames, _ = _capture_with_a_bad_line(tmp_path, fleet)
    out = _run_text(capsys, "mdms", "ingest", str(capture))
    assert f"{frames + 1} frames from" in out
    assert "accepted" in out and "malformed" in out
    assert f"readings stored: {frames * 4}, estimated: 0" in out


def test_T2_forged_and_unknown_frames_are_answered_with_their_reason(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(capsys, tmp_path, fleet)
    stranger = Fleet.create(1, SEED, first=100)  # not in the key file
    real = [f for _, f in fleet.frames(_day(2), 1, push_intervals=96)]
    forged = bytearray(real[0])
    forged[-3] ^= 0x01
    capture = tmp_path / "capture.txt"
    frames = [*real[1:], bytes(forged), *(f for _, f in stranger.frames(_day(2), 1))]
    write_capture(capture, frames)
    report = _run_json(capsys, "mdms", "ingest", str(capture))
    assert report["outcomes"] == {"accepted": 2, "bad_tag": 1, "unknown_meter": 1}
    assert [a["line"] for a in report["answers"] if a["status"] == "rejected"] == [3, 4]


def test_missing_capture_file_is_a_clear_error(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(capsys, "mdms", "ingest", str(tmp_path / "nowhere.txt"))
    assert "cannot read" in err and "nowhere.txt" in err


@pytest.fixture
def gap(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> SimulatedMeter:
    """One day of hourly pushes ingested, two of the first meter's pushes lost on the way."""
    _provision(capsys, tmp_path, fleet)
    meter = fleet.meters[0]
    pushes = [(m, f) for m, f in fleet.frames(_day(2), 1, push_intervals=4)]
    mine = [f for m, f in pushes if m is meter]
    lost = {mine[10], mine[11]}  # the intervals 40 to 47 of the day
    capture = tmp_path / "gap.txt"
    write_capture(capture, (f for _, f in pushes if f not in lost))
    report = _run_json(capsys, "mdms", "ingest", str(capture))
    assert report["estimates"] == 8
    return meter


def test_C1_5_readings_show_their_quality_flags(
    gap: SimulatedMeter, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("mdms", "readings", "--meter", _title(gap).lower(), "--day", _day(2).isoformat())
    shown = _run_json(capsys, *args)
    assert shown["meter"] == _title(gap)
    rows = shown["readings"]
    assert len(rows) == 96
    assert [r["quality"] for r in rows[40:48]] == [["estimated"]] * 8
    assert all(r["quality"] == [] for r in rows[:40] + rows[48:])
    first_end = dt.datetime.combine(_day(2), dt.time(0, 15), dt.UTC)
    assert rows[0]["end"] == first_end.isoformat()
    for before, row in itertools.pairwise(rows):  # the register counts every interval
        assert row["register_wh"] - row["interval_wh"] == before["register_wh"]
    text = _run_text(capsys, *args)
    assert text.count("estimated") == 8
    assert "96 readings over 1 stored day(s) of 1" in text


def test_readings_of_a_day_with_nothing_stored(
    gap: SimulatedMeter, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("mdms", "readings", "--meter", _title(gap), "--day", _day(30).isoformat())
    assert _run_json(capsys, *args, "--days", "3")["readings"] == []
    assert "0 readings over 0 stored day(s) of 3" in _run_text(capsys, *args, "--days", "3")


def test_readings_with_a_bad_date_is_a_clear_error(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(capsys, "mdms", "readings", "--meter", "00" * 8, "--day", "25/11/2026")
    assert "--day '25/11/2026' is not a date (YYYY-MM-DD)" in err


def test_stats_tally_frames_by_day_source_and_outcome(
    initialised: Path, tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(capsys, tmp_path, fleet)
    capture, frames, _ = _capture_with_a_bad_line(tmp_path, fleet)
    today = _day(0).isoformat()
    _run_json(capsys, "mdms", "ingest", str(capture))
    _run_json(capsys, "mdms", "ingest", str(capture))
    rows = _run_json(capsys, "mdms", "stats")
    assert {r["day"] for r in rows} <= {today, _day(0).isoformat()}  # the tally's day: the clock's
    # the line that is not hex is refused as a malformed frame each time: counted like any other
    assert sorted((r["source"], r["outcome"], r["frames"]) for r in rows) == [
        ("cli", "accepted", frames),
        ("cli", "duplicate", frames),
        ("cli", "malformed", 2),
    ]
    text = _run_text(capsys, "mdms", "stats")
    assert "accepted" in text and "duplicate" in text and str(frames) in text


def test_commands_need_an_initialised_data_directory(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not data_dir.exists()
    assert "run `broker init` first" in _refused(capsys, "mdms", "stats", code=2)
    assert not os.path.exists(data_dir)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--interval", "123"), "--interval 123: the simulator offers 300, 900, 1800, 3600"),
        (("--push-intervals", "7"), "--push-intervals 7 must divide the 96 intervals of a day"),
        (("--push-intervals", "0"), "--push-intervals 0 must divide the 96 intervals of a day"),
    ],
)
def test_simulate_refuses_intervals_it_cannot_make_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, str], message: str
) -> None:
    out = tmp_path / "sim"
    err = _refused(capsys, "meters", "simulate", "--out", str(out), "--meters", "2", *args)
    assert message in err
    assert not out.exists()
