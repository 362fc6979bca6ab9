"""``broker policy check``: every listed bad input is named with its file and kind.

A bundle that fails here never becomes the running policy (see test_store.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.policy.bundle import Bundle, load_bundle
from broker.policy.check import check_bundle
from broker.policy.errors import BundleError
from tests.broker.policy.conftest import CATALOGUE, POLICY, edit


def kinds(directory: Path) -> dict[str, list[str]]:
    report = check_bundle(load_bundle(directory))
    found: dict[str, list[str]] = {}
    for problem in report.problems:
        found.setdefault(problem.kind, []).append(problem.message)
    return found


def test_the_shipped_bundle_passes(shipped: Bundle) -> None:
    report = check_bundle(shipped)
    assert report.ok, [str(p) for p in report.problems]
    assert report.modules == 1
    assert report.tests == 1


def test_invalid_rego_is_named_with_its_line(bundle_copy: Path) -> None:
    edit(bundle_copy / POLICY, "default_tier].rank,", "default_tier].rank,,")
    report = check_bundle(load_bundle(bundle_copy))
    syntax = [p for p in report.problems if p.kind == "syntax"]
    assert syntax
    assert syntax[0].file == POLICY.as_posix()
    assert syntax[0].line > 0


def test_rego_v0_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "broker/release/old.rego").write_text(
        "# METADATA\n# title: old\n# description: v0\npackage broker.release\n\nlegacy { true }\n"
    )
    assert "`if` keyword is required" in " ".join(kinds(bundle_copy)["syntax"])


def test_manifest_must_say_rego_version_1(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / ".manifest").read_text())
    manifest["rego_version"] = 0
    (bundle_copy / ".manifest").write_text(json.dumps(manifest))
    assert kinds(bundle_copy)["manifest"] == [
        "rego_version must be 1 (the broker runs Rego v1 only)"
    ]


@pytest.mark.parametrize(
    ("call", "why"),
    [
        ('http.send({"method": "get", "url": "https://x"})', "reads the network"),
        ('net.lookup_ip_addr("example.org")', "reads the network"),
        ("opa.runtime()", "reads the runtime environment"),
        ("time.now_ns()", "reads the clock"),
        ('rand.intn("x", 10)', "is random"),
        ('crypto.x509.parse_certificates("")', "not on the list"),
    ],
)
def test_forbidden_builtins_are_refused(bundle_copy: Path, call: str, why: str) -> None:
    edit(
        bundle_copy / POLICY,
        "tier_known(r) if not r.tier\n",
        f"tier_known(r) if {{\n\tnot r.tier\n\t{call}\n}}\n",
    )
    messages = kinds(bundle_copy)["builtin"]
    assert len(messages) == 1
    assert why in messages[0]


def test_user_functions_and_imports_are_not_builtins(shipped: Bundle) -> None:
    # the shipped policy calls its own basis(), covers() and tier(); the tests call decide()
    assert "builtin" not in {p.kind for p in check_bundle(shipped).problems}


def test_a_policy_that_never_defines_allow_is_refused(bundle_copy: Path) -> None:
    text = (bundle_copy / POLICY).read_text()
    start = text.index("# The decision document")
    end = text.index("# The allow path is one rule")
    (bundle_copy / POLICY).write_text(text[:start] + text[end:])
    (bundle_copy / "broker/release/policy_test.rego").unlink()
    problems = kinds(bundle_copy)["decision"]
    assert "must be an object with allow" in problems[0]


def test_a_policy_that_allows_by_default_is_refused(bundle_copy: Path) -> None:
    edit(
        bundle_copy / POLICY, 'decision := {\n\t"allow": false,', 'decision := {\n\t"allow": true,'
    )
    assert kinds(bundle_copy)["decision"] == ["an empty input must be denied (deny by default)"]


def test_catalogue_with_an_unknown_tier_is_refused(bundle_copy: Path) -> None:
    catalogue = json.loads((bundle_copy / CATALOGUE).read_text())
    catalogue["purposes"]["marketing"]["default_tier"] = "plaintext"
    (bundle_copy / CATALOGUE).write_text(json.dumps(catalogue))
    assert kinds(bundle_copy)["catalogue"] == [
        "purpose marketing: default_tier 'plaintext' is not one of "
        "['raw', 'pseudonymised', 'generalised', 'aggregated', 'dp']"
    ]


def test_catalogue_grid_operations_must_stay_aggregated(bundle_copy: Path) -> None:
    catalogue = json.loads((bundle_copy / CATALOGUE).read_text())
    catalogue["purposes"]["grid_operations"]["default_tier"] = "pseudonymised"
    (bundle_copy / CATALOGUE).write_text(json.dumps(catalogue))
    assert "aggregates only (R4.4)" in kinds(bundle_copy)["catalogue"][0]


def test_catalogue_aggregate_release_is_a_yes_or_no(bundle_copy: Path) -> None:
    catalogue = json.loads((bundle_copy / CATALOGUE).read_text())
    catalogue["purposes"]["marketing"]["aggregate_release"] = "if asked nicely"
    (bundle_copy / CATALOGUE).write_text(json.dumps(catalogue))
    assert kinds(bundle_copy)["catalogue"] == [
        "purpose marketing: aggregate_release (aggregates lawful without consent) must be true "
        "or false"
    ]


def test_catalogue_tiers_cannot_be_invented(bundle_copy: Path) -> None:
    catalogue = json.loads((bundle_copy / CATALOGUE).read_text())
    catalogue["tiers"]["cleartext"] = {"rank": 5, "fields_drop": [], "obligations": []}
    (bundle_copy / CATALOGUE).write_text(json.dumps(catalogue))
    assert "tiers must be exactly" in kinds(bundle_copy)["catalogue"][0]


def test_package_must_match_its_directory(bundle_copy: Path) -> None:
    edit(bundle_copy / POLICY, "package broker.release\n", "package broker.elsewhere\n")
    assert any("does not match its directory" in m for m in kinds(bundle_copy)["package"])


def test_formatting_rules(bundle_copy: Path) -> None:
    edit(bundle_copy / POLICY, "\tr := input.request\n", "    r := input.request  \n")
    messages = kinds(bundle_copy)["format"]
    assert "trailing whitespace" in messages
    assert "indent with tabs, as opa fmt does" in messages


def test_metadata_title_and_codes(bundle_copy: Path) -> None:
    edit(bundle_copy / POLICY, "# title: Release decisions\n", "")
    edit(bundle_copy / POLICY, "#     no_contract: ", "#     no_contract_any_more: ")
    messages = kinds(bundle_copy)["metadata"]
    assert "the METADATA block has no title" in messages
    assert "reason code 'no_contract' is not in METADATA codes" in messages


def test_reason_codes_come_from_metadata(shipped: Bundle) -> None:
    codes = shipped.data["broker"]["reason_codes"]
    assert codes["no_covering_consent"].startswith("no active consent")
    assert "personal_data_to_operator" in codes


def test_unreadable_bundles_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no \.manifest file"):
        load_bundle(tmp_path)
    (tmp_path / ".manifest").write_text("{not json")
    with pytest.raises(BundleError, match=r"\.manifest: not valid JSON"):
        load_bundle(tmp_path)
    (tmp_path / ".manifest").write_text("{}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "data.json").write_text("[1,")
    with pytest.raises(BundleError, match=r"a/data\.json: not valid JSON"):
        load_bundle(tmp_path)
