"""``broker demo`` runs the foundation's story and leaves a summary and a verifiable export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.audit.verify import verify_bundle
from broker.cli.main import main


def test_demo_writes_summary_and_a_verifiable_export(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--events", "700", "--customers", "9"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verify_ok"] is True and summary["tampering_caught"] is True
    steps = {step["step"]: step for step in summary["steps"]}
    healthz = steps["mtls"]["healthz"]
    assert healthz["third party with a valid certificate"].startswith("HTTP 200")
    assert healthz["client without a certificate"].startswith("refused")
    assert healthz["client with a revoked certificate"].startswith("refused")
    assert steps["keys"]["shredded"] == 1 and steps["keys"]["rewrapped"] == 9
    vkey = (out / "var" / "keys" / "audit-signing.pub").read_text().strip()
    assert (
        verify_bundle(out / "audit-export.jsonl", vkey).entries == steps["audit_export"]["entries"]
    )
    assert main(["demo", "--out", str(out), "--events", "10"]) == 0  # an earlier demo is replaced


def test_demo_refuses_to_clobber_a_foreign_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "not an earlier demo's output" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "mine"
