"""``broker privacy``: the privacy and utility report, re-keying and budgets (issue 5, part 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli.main import main


def test_report_writes_json_and_a_plot_with_sane_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    args = [
        "privacy",
        "report",
        "--out",
        str(out),
        "--households",
        "1000",
        "--linkage-households",
        "300",
        "--json",
    ]
    assert main(args) == 0
    body = json.loads(capsys.readouterr().out)
    assert json.loads((out / "privacy-report.json").read_text()) == body
    assert (out / "error-by-group-size.png").read_bytes().startswith(b"\x89PNG")
    mape = body["utility"]["dp_mape_percent"]
    assert set(mape) == {"100", "1000"}
    for size in mape:  # more budget, less error
        errors = [mape[size][e] for e in ("0.1", "0.5", "1.0", "2.0")]
        assert errors == sorted(errors, reverse=True)
    assert mape["1000"]["1.0"] < mape["100"]["1.0"]  # bigger groups, less error
    links = body["privacy"]["linkage_accuracy"]
    assert links["pseudonymised"]["accuracy"] > 0.2
    assert links["generalised"]["accuracy"] <= links["generalised"]["bound_1_over_k"]
    assert body["privacy"]["generalised"]["k_reached"] >= 15
    assert links["aggregated"]["accuracy"] is None


def test_rekey_and_budget(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert main(["privacy", "rekey", "--domain", "acme-energy"]) == 0
    assert "pseudonym key version 2" in capsys.readouterr().out
    assert main(["privacy", "budget", "--recipient", "ems-grid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epsilon_spent"] == 0


def test_report_refuses_a_too_small_population(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "report", "--households", "10"]) == 2
    assert "100" in capsys.readouterr().err
