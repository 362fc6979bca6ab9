"""``broker demo`` runs the whole story and leaves a summary and a verifiable export: the
reference path with its attacks caught (T2, T3), keys rotated without losing a frame (C1.6),
a customer erased (C1.7), release decisions by consent and policy with a withdrawal effective
at once (R3.4, R4.4), and the audit log verified offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.audit.verify import verify_bundle
from broker.cli.main import main


def test_demo_writes_summary_and_a_verifiable_export(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["--events", "700", "--meters", "30", "--days", "4", "--rotate", "5"]
    assert main(["demo", "--out", str(out), *args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verify_ok"] is True and summary["tampering_caught"] is True
    steps = {step["step"]: step for step in summary["steps"]}
    healthz = steps["mtls"]["healthz"]
    assert healthz["third party with a valid certificate"].startswith("HTTP 200")
    assert healthz["client without a certificate"].startswith("refused")
    assert healthz["client with a revoked certificate"].startswith("refused")
    assert steps["keys"]["rewrapped"] == 30 and steps["keys"]["meter_keys_rewrapped"] == 35
    erased = steps["keys"]["erased"]
    assert erased["days_readable_before"] == 4 and erased["days_after"].startswith("unreadable")
    path = summary["reference_path"]
    assert path["attacks"] == {
        "forged (T2)": "rejected: bad_tag",
        "replayed (T2)": "rejected: replay",
        "profile_tampered (T3)": "accepted, 1 of 4 readings flagged unreconciled",
    }
    assert path["key_rotation"] == {"rotated": 5}
    sent = sum(steps["reference_path"]["frames_sent"].values())
    assert path["frames"]["answers"] == {"accepted": sent, "rejected": 2}  # nothing lost
    assert steps["reference_path"]["store"]["readings"] == 30 * 4 * 96
    vkey = (out / "var" / "keys" / "audit-signing.pub").read_text().strip()
    assert (
        verify_bundle(out / "audit-export.jsonl", vkey).entries == steps["audit_export"]["entries"]
    )
    assert steps["audit_export"]["tampered_verdict"].startswith("entry seq")
    decisions = summary["consent_and_policy"]["decisions"]
    assert decisions == {
        "energy-app, personalised service, hourly (consented)": "allow: tier raw, hourly (consent)",
        "energy-app, marketing (not consented)": "deny: no_covering_consent",
        "EMS asks for the household (R4.4)": "deny: personal_data_to_operator",
        "EMS asks for the feeder aggregate": "allow: tier aggregated, 15min (legal_obligation)",
        "energy-app right after the withdrawal": "deny: no_covering_consent",
    }
    assert summary["consent_and_policy"]["bad_bundle_refused"] is True
    officer = steps["consent_and_policy"]["officer"]
    assert officer["active_revision"] == "1" and officer["decisions_logged"] == 5
    assert officer["preview"] == "1 of 5 decisions would change {'tier': 1}"
    assert steps["consent_and_policy"]["consent"]["receipt_verified"] is True
    service = summary["service"]
    assert service["consent_flow"].endswith("redeemed again: invalid_grant")
    assert service["energy_app_pull"] == "HTTP 200, Green Button ESPI, 24 hourly readings"
    assert service["token_with_another_certificate"] == "HTTP 401 InvalidToken"
    assert service["ems_pull"].startswith("HTTP 200") and service["ems_pull"].endswith("none")
    assert service["energy_app_after_withdrawal"] == "HTTP 403 ReleaseDenied"
    assert service["regulator_export"].endswith("verified offline")
    assert "signed page(s) posted" in service["energy_app_push"]
    assert "after 1 refused attempt(s)" in service["energy_app_push"]
    assert service["insight_co_household_data"] == "HTTP 403 (no_covering_consent)"
    assert service["insight_co_research_aggregate"] == "HTTP 200, tier aggregated"
    assert service["deletion"].endswith("acknowledged (signed): HTTP 200 acknowledged")
    counts = service["counts"]
    assert counts["deletion_requests"] == counts["deletions_acknowledged"] == 1
    assert counts["deletions_overdue"] == 0 and counts["push_retries"] == 1
    assert counts["pushes_delivered"] >= 2 and counts["requests_refused"] == 3
    again = ["--events", "10", "--meters", "10", "--days", "3", "--rotate", "0"]
    assert main(["demo", "--out", str(out), *again]) == 0  # an earlier demo is replaced
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tampering_caught"] is True  # whatever the number of audit events


@pytest.mark.parametrize("pushes", ["0", "5", "97"])
def test_demo_refuses_pushes_that_do_not_tile_a_day(
    tmp_path: Path, pushes: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--push-intervals", pushes]) == 1
    assert "must divide the 96 intervals of a day" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before anything is written


def test_demo_refuses_to_clobber_a_foreign_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "not an earlier demo's output" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "mine"
