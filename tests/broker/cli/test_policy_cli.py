"""``broker policy``: the privacy officer's tools, driven as an officer would.

The decisions replayed by ``diff`` and explained by ``explain`` are recorded by a real decision
point into the data directory's own decision log.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.policy.bundle import shipped_bundle_dir
from broker.policy.decision import Facts, ReleaseRequest, consent_fact
from broker.policy.service import open_decision_point
from broker.runtime.core import Runtime
from broker.settings import load_settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "candidate"
    shutil.copytree(shipped_bundle_dir(), target, ignore=shutil.ignore_patterns("*.md", "*.yaml"))
    return target


def _record_decisions() -> list[str]:
    """Three decisions in the log: a consented raw release, a denial, an EMS aggregate."""
    rt = Runtime.open(load_settings())
    try:
        point = open_decision_point(rt.settings, rt.audit, rt.clock, rt.hasher)
        period = (NOW - timedelta(days=2), NOW)
        consent = consent_fact(
            "cn_x", "tp_app", ["personalised_service"], ["consumption"], "15min", 30, True,
            True, NOW - timedelta(days=1), NOW + timedelta(days=90),
        )  # fmt: skip
        facts = [
            Facts(ReleaseRequest("tp_app", "third_party", "personalised_service",
                                 ("consumption",), "hourly", *period, "cust-7"), [consent], NOW),
            Facts(ReleaseRequest("tp_app", "third_party", "marketing",
                                 ("consumption",), "monthly", *period, "cust-7"), [], NOW),
            Facts(ReleaseRequest("ems_grid", "ems", "grid_operations",
                                 ("consumption",), "15min", *period, None), [], NOW),
        ]  # fmt: skip
        ids = [point.decide(f).decision_id for f in facts]
        with rt.db.transaction() as session:
            point.flush(session)
        return ids
    finally:
        rt.close()


def test_init_activates_the_shipped_policy(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    assert "activated the shipped release policy as revision 1" in capsys.readouterr().out
    assert main(["init"]) == 0
    assert "activated" not in capsys.readouterr().out
    assert main(["policy", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["active"] == "1"
    assert status["engine"] == "embedded"


def test_check_and_test_pass_on_the_shipped_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check"]) == 0
    assert ": ok" in capsys.readouterr().out
    assert main(["policy", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["failed"] == 0 and report["errors"] == 0
    assert report["passed"] >= 29
    assert report["coverage_percent"] == 100.0


def test_check_names_the_problem_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _copy(tmp_path)
    policy = bundle / "broker/release/policy.rego"
    policy.write_text(policy.read_text().replace("is_number(input.now_s)", "time.now_ns() > 0", 1))
    assert main(["policy", "check", str(bundle)]) == 1
    captured = capsys.readouterr()
    assert "broker/release/policy.rego:" in captured.out
    assert "time.now_ns is not allowed: it reads the clock" in captured.out
    assert "fails policy check" in captured.err


def test_failing_tests_exit_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _copy(tmp_path)
    tests = bundle / "broker/release/policy_test.rego"
    shipped = tests.read_text()
    tests.write_text(shipped + '\ntest_wrong if {\n\tdecide(base).tier == "dp"\n}\n')
    assert main(["policy", "test", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "FAIL broker.release_test.test_wrong" in out
    count = len(re.findall(r"^test_\w+ if", shipped, re.MULTILINE))  # every shipped test passes
    assert f"{count}/{count + 1} passed" in out


def test_activate_refuses_a_broken_bundle_and_keeps_the_running_one(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    bundle = _copy(tmp_path)
    policy = bundle / "broker/release/policy.rego"
    policy.write_text(
        policy.read_text().replace("package broker.release", "package broker.release\n\nx := {", 1)
    )
    assert main(["policy", "activate", str(bundle)]) == 1
    assert "fails policy check" in capsys.readouterr().err
    assert main(["policy", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["active"] == "1"


def test_activate_diff_and_explain(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    ids = _record_decisions()
    candidate = _copy(tmp_path)
    catalogue_path = candidate / "broker/catalogue/data.json"
    catalogue = json.loads(catalogue_path.read_text())
    catalogue["purposes"]["personalised_service"]["default_tier"] = "pseudonymised"
    catalogue["purposes"]["grid_operations"]["recipient_kinds"] = ["third_party"]
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")
    capsys.readouterr()
    assert main(["policy", "diff", "--candidate", str(candidate), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["replayed"] == 3
    assert report["changed"] == 2
    assert report["by_kind"]["tier"] == 1
    assert report["by_kind"]["allow_to_deny"] == 1
    groups = {(g["purpose"], g["recipient"]): g for g in report["by_purpose_and_recipient"]}
    assert groups[("grid_operations", "ems_grid")]["allow_to_deny"] == 1
    assert groups[("personalised_service", "tp_app")]["tier"] == 1
    assert main(["policy", "diff", "--candidate", str(candidate)]) == 0
    assert "2 of 3 recorded decisions would change" in capsys.readouterr().out

    assert main(["policy", "explain", "--decision", ids[1], "--json"]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["decision"]["allow"] is False
    assert explained["deny_reasons_that_hold"] == ["no_covering_consent"]
    assert main(["policy", "explain", "--decision", ids[0], "--bundle", str(candidate)]) == 0
    out = capsys.readouterr().out
    assert "ALLOW" in out and "tier pseudonymised" in out

    # the candidate breaks the bundle's own tests, so it can be previewed but not activated
    assert main(["policy", "activate", str(candidate)]) == 1
    assert "test_ems_gets_aggregates_for_grid_operations" in capsys.readouterr().err
    catalogue["purposes"]["personalised_service"]["default_tier"] = "raw"
    catalogue["purposes"]["grid_operations"]["recipient_kinds"] = ["ems"]
    catalogue["purposes"]["marketing"]["retention_days"] = 90
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")
    assert main(["policy", "activate", str(candidate), "--json"]) == 0
    activation = json.loads(capsys.readouterr().out)
    assert (activation["revision"], activation["previous"]) == ("2", "1")
    assert main(["audit", "export", "--out", str(tmp_path / "export")]) == 0


def test_explain_input_file_and_bad_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "now_s": 1_790_000_000,
        "recipient": {"id": "ems_grid", "kind": "ems", "status": "active"},
        "purpose": "grid_operations",
        "request": {"scope": "subject", "subject": "hs1:00", "categories": ["consumption"],
                    "granularity": "15min", "from_s": 1_789_990_000, "to_s": 1_790_000_000},
        "consents": [],
    }  # fmt: skip
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    assert (
        main(["policy", "explain", "--input", str(path), "--bundle", str(shipped_bundle_dir())])
        == 0
    )
    out = capsys.readouterr().out
    assert "DENY" in out
    assert "personal_data_to_operator: the grid operator receives no household data (R4.4)" in out
    path.write_text("[1, 2")
    assert (
        main(["policy", "explain", "--input", str(path), "--bundle", str(shipped_bundle_dir())])
        == 1
    )
    assert "not a JSON file" in capsys.readouterr().err
    assert main(["policy", "explain"]) == 1
    assert "give exactly one of --input FILE or --decision ID" in capsys.readouterr().err


def test_consents_name_only_what_the_active_catalogue_knows(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The purposes a consent may name are the privacy officer's catalogue, not code."""
    assert main(["init"]) == 0
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_ref,name,address,account_number\nC-9,Nine,9 Road,AC-9\n")
    assert main(["customers", "import", str(customers)]) == 0
    assert main(["recipients", "register", "ev-co", "--kind", "third_party"]) == 0
    notice = tmp_path / "notice.txt"
    notice.write_text("ev-co may read your consumption to schedule your charging.\n")
    give = ["consent", "give", "--customer", "C-9", "--recipient", "ev-co", "--purpose",
            "ev_charging", "--category", "consumption", "--granularity", "daily",
            "--days", "30", "--notice", str(notice)]  # fmt: skip
    assert main(give) != 0
    assert "ev_charging" in capsys.readouterr().err
    candidate = _copy(tmp_path)
    catalogue_path = candidate / "broker/catalogue/data.json"
    catalogue = json.loads(catalogue_path.read_text())
    catalogue["purposes"]["ev_charging"] = dict(
        catalogue["purposes"]["demand_response"], description="smart charging of the customer's EV"
    )
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")
    assert main(["policy", "activate", str(candidate)]) == 0
    assert main(give) == 0


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("broker/release/policy.rego", b"# a NUL \x00 in a comment\n", "control character U+0000"),
        ("broker/release/policy.rego", b"# escape \x1b[2J\n", "control character U+001B"),
        ("broker/release/policy.rego", b"# latin-1 caf\xe9\n", "not UTF-8 text"),
        ("broker/release/policy.rego", "# \u202e}{ fi\n".encode(), "control character U+202E"),
        ("broker/catalogue/data.json", b"\x0c", "control character U+000C"),
    ],
    ids=["nul", "escape", "not_utf8", "bidi_override", "form_feed_in_data"],
)
def test_R3_5_a_bundle_that_is_not_text_is_refused_and_never_activated(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    raw: bytes,
    message: str,
) -> None:
    """R3.5, R3.4: the release policy is text a privacy officer reads and signs. A file holding
    bytes no reviewer sees (NUL, escapes) or that is not UTF-8 is refused by check, test, diff and
    activate alike, naming the file and line; the active revision stays as it was."""
    assert main(["init"]) == 0
    candidate = _copy(tmp_path)
    target = candidate / path
    target.write_bytes(raw + target.read_bytes())
    capsys.readouterr()
    for command in (
        ["policy", "check", str(candidate)],
        ["policy", "test", str(candidate)],
        ["policy", "diff", "--candidate", str(candidate)],
        ["policy", "activate", str(candidate)],
    ):
        assert main(command) != 0, command
        err = capsys.readouterr().err
        assert f"{path}: line 1" in err and message in err, (command, err)
    assert main(["policy", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["active"] == "1"
    revisions = data_dir / "policy" / "revisions"
    assert sorted(p.name for p in revisions.iterdir()) == ["1"]
