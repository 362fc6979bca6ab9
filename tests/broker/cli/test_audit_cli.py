"""``broker audit``: the regulator's export and offline verification from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli.main import main


@pytest.fixture(autouse=True)
def three_customers(data_dir: Path) -> None:
    """``init`` writes one entry (``policy.activated``: the shipped policy), then three keys."""
    assert main(["init"]) == 0
    for subject in ("c1", "c2", "c3"):
        assert main(["keys", "rotate", "--subject", subject]) == 0


def test_export_then_verify_with_the_pinned_key(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--out", str(out)]) == 0
    key = str(data_dir / "keys" / "audit-signing.pub")
    capsys.readouterr()
    assert main(["audit", "verify", str(out), "--trusted-key", key]) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("OK: 4 entries verified") and "(pinned key)" in summary[0]


def test_export_with_filters_and_a_consistency_proof(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / "checkpoint.txt"
    assert main(["audit", "checkpoint"]) == 0
    earlier.write_text(capsys.readouterr().out)
    assert main(["keys", "destroy", "--subject", "c1", "--yes"]) == 0
    out = tmp_path / "a.jsonl"
    args = [
        "--type",
        "key.data_key_destroyed",
        "--since",
        "2020-01-01",
        "--from-checkpoint",
        str(earlier),
    ]
    assert main(["audit", "export", "--out", str(out), *args]) == 0
    capsys.readouterr()
    key = str(data_dir / "keys" / "audit-signing.pub")
    assert main(["audit", "verify", str(out), "--trusted-key", key]) == 0
    line = capsys.readouterr().out
    assert "OK: 1 entries" in line and "consistent with checkpoint 4" in line


def test_tampered_export_fails_with_the_reason(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace('"version":1', '"version":2', 1))
    assert main(["audit", "verify", str(out)]) == 1
    assert "entry seq 1 (line"  # the first entry with a version field in capsys.readouterr().err


def test_bad_time_and_bad_key_are_clear_errors(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "export", "--out", str(tmp_path / "x"), "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "e").write_text("")
    assert main(["audit", "verify", str(tmp_path / "e"), "--trusted-key", "nonsense+key"]) == 1
    assert "--trusted-key" in capsys.readouterr().err


def test_R4_2_without_a_pinned_key_verify_says_authenticity_was_not_checked(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """R4.2, R4.3: an export made by anyone with a key of their own (here another broker's data
    directory) verifies against the key it carries; without ``--trusted-key`` the command must
    not print ``OK:`` and must fail, unless ``--allow-unpinned`` asks for the integrity check
    alone, and then it says plainly that authenticity was not checked."""
    ours = data_dir / "keys" / "audit-signing.pub"
    monkeypatch.setenv("BROKER_DATA_DIR", str(tmp_path / "impostor"))
    assert main(["init"]) == 0
    forged = tmp_path / "forged.jsonl"
    assert main(["audit", "export", "--out", str(forged)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(forged)]) == 1
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    assert "authenticity NOT checked" in captured.out
    assert "--trusted-key" in captured.err and "--allow-unpinned" in captured.err
    assert main(["audit", "verify", str(forged), "--allow-unpinned"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("UNPINNED: 1 entries") and "authenticity NOT checked" in line
    assert main(["audit", "verify", str(forged), "--trusted-key", str(ours)]) == 1
    assert "not by the trusted key" in capsys.readouterr().err
