"""``broker retention run`` as an operator runs it (C3.3, GAO-08-343 lifecycle): readings past
``BROKER_RETENTION_READINGS_DAYS`` are gone from ``broker mdms readings``, newer ones stay, a dry
run changes nothing, the run is audited, and the exported audit log still verifies with the
pinned key."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from broker.cli.main import main
from connectors.meters.simulator import Fleet, write_capture, write_keyfile
from tests.broker.cli.test_serve_cli import _free_port, _wait_for

pytestmark = pytest.mark.timeout(300)


def _day(days_ago: int) -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def fleet(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Fleet:
    """Three meters with readings 9 and 8 days ago and 2 days ago."""
    assert main(["init"]) == 0
    fleet = Fleet.create(3, 1332)
    keys = tmp_path / "keys.csv"
    write_keyfile(keys, fleet.meters)
    _json(capsys, "meters", "provision", "--key-file", str(keys))
    capture = tmp_path / "capture.txt"
    frames = [f for _, f in fleet.frames(_day(9), 2, push_intervals=96)]
    frames += [f for _, f in fleet.frames(_day(2), 1, push_intervals=96)]
    write_capture(capture, frames)
    assert _json(capsys, "mdms", "ingest", str(capture))["outcomes"] == {"accepted": len(frames)}
    return fleet


def _readings(capsys: pytest.CaptureFixture[str], meter: str, day: dt.date, days: int) -> Any:
    args = ("mdms", "readings", "--meter", meter, "--day", day.isoformat(), "--days", str(days))
    return _json(capsys, *args)["readings"]


def test_C3_3_retention_run_purges_expired_readings_and_keeps_the_audit_verifiable(
    fleet: Fleet,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_RETENTION_READINGS_DAYS", "5")
    meter = fleet.meters[0].system_title.hex().upper()
    assert len(_readings(capsys, meter, _day(9), 2)) == 192

    dry = _json(capsys, "retention", "run", "--dry-run")
    by_kind = {k["kind"]: k for k in dry["kinds"]}
    assert dry["dry_run"] is True and dry["audit_seq"] is None
    assert by_kind["readings"]["count"] >= 6  # three meters, two days (and any gap estimates)
    assert by_kind["readings"]["keep_days"] == 5
    assert len(_readings(capsys, meter, _day(9), 2)) == 192  # nothing changed

    done = _json(capsys, "retention", "run")
    assert {k["kind"]: k["count"] for k in done["kinds"]} == {
        k: v["count"] for k, v in by_kind.items()
    }
    assert done["audit_seq"] is not None
    assert _readings(capsys, meter, _day(9), 4) == []  # expired: unreadable
    assert len(_readings(capsys, meter, _day(2), 1)) == 96  # within the period: untouched

    capsys.readouterr()
    assert main(["retention", "run"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "readings" in text and "delivery_bodies" in text and "0 items purged" in text

    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--out", str(out)]) == 0
    key = str(data_dir / "keys" / "audit-signing.pub")
    capsys.readouterr()
    assert main(["audit", "verify", str(out), "--trusted-key", key]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    purged = [
        json.loads(line) for line in out.read_text().splitlines() if '"retention.purged"' in line
    ]
    assert len(purged) == 2  # each run that changed or could have changed data is one entry


def test_a_bad_retention_setting_is_a_clear_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["init"]) == 0
    monkeypatch.setenv("BROKER_RETENTION_READINGS_DAYS", "0")
    capsys.readouterr()
    assert main(["retention", "run"]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "BROKER_RETENTION_READINGS_DAYS" in err and "greater than or equal to 1" in err


def test_C3_3_broker_serve_runs_the_retention_job_on_its_own(
    fleet: Fleet, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``broker serve`` runs besides the API: the purge at start and every interval."""
    meter = fleet.meters[0].system_title.hex().upper()
    port, portal = _free_port(), _free_port()
    env = {
        **os.environ,
        "BROKER_DATA_DIR": str(data_dir),
        "BROKER_RETENTION_READINGS_DAYS": "5",
        "BROKER_RETENTION_INTERVAL_S": "60",
    }
    cmd = [sys.executable, "-m", "broker", "serve", "--port", str(port)]
    log = data_dir.parent / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*cmd, "--portal-port", str(portal)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for(port, process)
        deadline = time.monotonic() + 120  # a bound on a hang, not on speed
        while _readings(capsys, meter, _day(9), 2):
            assert time.monotonic() < deadline, "the retention job did not run within 120 s"
            time.sleep(0.2)
        assert len(_readings(capsys, meter, _day(2), 1)) == 96
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert "retention job every 60 s" in log.read_text()
