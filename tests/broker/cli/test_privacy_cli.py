"""``broker privacy``: the privacy and utility report, re-keying and budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.cli.main import main


def test_report_writes_json_and_a_plot_with_sane_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
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
    _assert_attacks_fail_now(body["attacks"], links["pseudonymised"]["accuracy"])

    # printed as tables, with the report's figures as they are (the same report, not rerun)
    monkeypatch.setattr("broker.cli.privacy.run", lambda *_: body)
    assert main(args[:-1]) == 0
    printed = capsys.readouterr().out
    attacks = body["attacks"]
    erased = attacks["cross_recipient_differencing"]["before"]["cells_recovered"]
    assert _figures(printed, "household's") == [str(erased), "0"]
    pooled = attacks["cross_granularity_recovery"]
    assert _figures(printed, "withheld cells") == [
        f"{pooled['before']['recovered']} of {pooled['before']['withheld_cells']} (0.0)",
        f"0 of {pooled['now']['withheld_cells']}",
    ]
    ratio = attacks["averaging_two_registrations"]["before"]["ratio"]
    assert _figures(printed, "RMSE of average") == [repr(ratio), "1.0"]
    assert _figures(printed, "ε spent per") == ["2.0", "1.0"]
    assert "the time series remains a fingerprint" in " ".join(printed.split())


def _figures(printed: str, label: str) -> list[str]:
    """The before and now columns of the first table line holding ``label``."""
    line = next(line for line in printed.splitlines() if label in line)
    return [cell.strip() for cell in line.split("│")[3:5]]


def _assert_attacks_fail_now(attacks: dict[str, Any], relinked: float) -> None:
    """Each attack recovers exactly against per-request cells and nothing against canonical
    cells: these fail if canonical cells (or the checks beside them) regress."""
    assert attacks["setup"]["households_per_feeder"] == {"F-001": 110, "F-002": 150, "F-003": 80}
    erased = attacks["cross_recipient_differencing"]
    before, now = erased["before"], erased["now"]
    assert before["cells_recovered"] == before["cells_released_to_both"] > 80
    assert before["max_abs_error_wh"] == 0.0  # A - B is the household's profile, exactly
    assert before["max_abs_a_minus_b_wh"] > 0 and before["household_wh_recovered"] > 0
    assert before["differencing_refused"] is False  # checked per recipient, before
    assert now["cells_recovered"] == 0 and now["max_abs_a_minus_b_wh"] == 0.0
    assert now["cells_released_to_both"] == before["cells_released_to_both"]
    assert now["differencing_refused"] is True and now["member_difference"] == 1

    pooled = attacks["cross_granularity_recovery"]
    before, now = pooled["before"], pooled["now"]
    assert before["recovered"] == len(before["recovered_cells"]) > 0
    assert before["max_abs_error_wh"] == 0.0
    for cell in before["recovered_cells"]:
        assert cell["derived_wh"] == cell["true_wh"]
    assert ["F-003"] in [c["groups"] for c in before["recovered_cells"]]  # never released alone
    assert now["recovered"] == 0 and now["recovered_cells"] == [] and now["withheld_cells"] > 0
    shares = pooled["released_share"]
    assert set(shares) == {"900", "1800", "3600", "86400"}
    assert all(0 <= s["now"] <= s["before"] <= 1 for s in shares.values())

    averaged = attacks["averaging_two_registrations"]
    before, now = averaged["before"], averaged["now"]
    assert before["ratio"] < 0.8 and before["epsilon_spent"] == 2.0 and before["draws"] == 2
    assert now["ratio"] == 1.0 and now["epsilon_spent"] == 1.0 and now["draws"] == 1

    rekeyed = attacks["linkage_after_rekey"]
    assert rekeyed["before"]["relinked"] == rekeyed["now"]["relinked"] == relinked
    assert "fingerprint" in rekeyed["note"]


def test_rekey_and_budget(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert main(["privacy", "rekey", "--domain", "acme-energy"]) == 0
    assert "pseudonym key version 2" in capsys.readouterr().out
    assert main(["privacy", "budget", "--recipient", "ems-grid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epsilon_spent"] == 0


def test_report_refuses_a_too_small_population(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "report", "--households", "10"]) == 2
    assert "100" in capsys.readouterr().err
