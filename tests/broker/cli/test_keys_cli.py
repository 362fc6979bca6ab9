"""``broker init`` and ``broker keys``: what an operator runs, with clear errors on bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from broker.cli.main import main


def test_C1_6_init_creates_private_key_files(data_dir: Path) -> None:
    assert main(["init"]) == 0
    for name in ("kek-v0001.key", "subject-hash.key", "audit-signing.key"):
        assert stat.S_IMODE((data_dir / "keys" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert main(["init"]) == 0  # running it again changes nothing


def test_keys_init_refuses_to_overwrite(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "init"]) == 0
    assert main(["keys", "init"]) == 4
    assert "already exists; refusing to overwrite" in capsys.readouterr().err


def test_C1_6_kek_rotation_from_the_cli(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert main(["keys", "rotate", "--subject", "customer-1"]) == 0
    assert main(["keys", "rotate"]) == 0
    capsys.readouterr()
    assert main(["keys", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["keks"] == [{"kek_id": "file:v2", "current": True, "data_keys": 1}]
    assert not (data_dir / "keys" / "kek-v0001.key").exists()
    assert shown["audit_verifier_key"].startswith("smart-meter-broker.example/audit+")


def test_C1_7_destroy_from_the_cli(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert main(["keys", "rotate", "--subject", "customer-1"]) == 0
    assert main(["keys", "destroy", "--subject", "customer-1", "--yes"]) == 0
    assert "1 data key(s) destroyed" in capsys.readouterr().out


def test_missing_data_directory_is_a_clear_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "show"]) == 2
    assert "does not exist; run `broker init` first" in capsys.readouterr().err


def test_corrupted_key_file_is_a_clear_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    (data_dir / "keys" / "subject-hash.key").write_bytes(b"garbage!\n")
    assert main(["keys", "show"]) == 4
    assert "subject-hash.key is damaged" in capsys.readouterr().err


def test_unreachable_database_is_a_clear_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    monkeypatch.setenv("BROKER_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert main(["keys", "show"]) == 3
    assert "database" in capsys.readouterr().err


def test_a_bad_option_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """typer parses with a click of its own: its errors too must end as exit 2 and a message."""
    assert main(["demo", "--meters", "5"]) == 2
    assert "Invalid value for '--meters'" in capsys.readouterr().err
