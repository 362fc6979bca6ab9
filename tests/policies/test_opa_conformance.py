"""OPA's Rego conformance cases on the embedded engine, and every known gap failing closed.

X.1332 R3.4 and R3.5 (and R4.4 after them) hold only if the Rego decisions enforcing them are
reliable: where regorus disagrees with OPA, a release must be denied, never allowed. Each of OPA's
cases passes, or is listed in ``policies/conformance-expected-failures.yaml`` with its reason and
kind and must still fail that way; for each kind, a ``broker.release`` policy hitting the gap is
loaded in ``EmbeddedEngine`` and shown not to allow (``test_gap_fails_closed``). A wrong answer
(``semantics``) could as well allow, so the builtins concerned are refused by ``broker policy
check`` and a policy calling one is never activated; a panic denies that decision only, the next
one on the same thread is evaluated as usual.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.policy.bundle import load_bundle, shipped_bundle_dir
from broker.policy.check import check_bundle
from broker.rego.engine import UNDEFINED, EmbeddedEngine, EngineFailure, PolicyLoadError
from tests.policies.conformance import (
    OPA_CASES,
    Case,
    Status,
    canonical,
    load_cases,
    run_case,
)

EXPECTED_FILE = (
    Path(__file__).resolve().parents[2] / "policies" / "conformance-expected-failures.yaml"
)

KIND_SHOWS = {
    "missing_builtin": Status.UNKNOWN_BUILTIN,
    "strict_builtin_error": Status.RAISED,
    "with_builtin_mock": Status.RAISED,
    "unsupported_syntax": Status.REFUSED_AT_LOAD,
    "number_precision": Status.REFUSED_AT_LOAD,
    "engine_panic": Status.PANICKED,
    "semantics": Status.WRONG_RESULT,
}
"""How the engine fails a case of each kind of gap: a listed case failing otherwise is misfiled."""


@dataclass(frozen=True)
class ExpectedFailure:
    file: str
    note: str
    kind: str
    reason: str

    @property
    def id(self) -> str:
        return f"{self.file}::{self.note}"


@pytest.fixture(scope="module")
def expected() -> dict[str, ExpectedFailure]:
    listed = [
        ExpectedFailure(**entry)
        for entry in yaml.safe_load(EXPECTED_FILE.read_text(encoding="utf-8"))["expected_failures"]
    ]
    by_id = {entry.id: entry for entry in listed}
    assert len(by_id) == len(listed), "a case is listed twice"
    return by_id


def _case_params() -> list[Any]:
    if not OPA_CASES.is_dir():
        return [pytest.param(None, id="opa-conformance-cases-missing")]
    return [pytest.param(case, id=case.id) for case in load_cases(OPA_CASES)]


@pytest.mark.parametrize("case", _case_params())
def test_opa_conformance(
    case: Case | None, shared_dir: Path, expected: dict[str, ExpectedFailure]
) -> None:
    assert case is not None, f"{OPA_CASES} is missing: the OPA conformance cases must be there"
    outcome = run_case(case)
    listed = expected.get(case.id)
    if listed is None:
        assert outcome.passed, (
            f"{outcome.status.value} and not in {EXPECTED_FILE.name}: {outcome.detail}"
        )
        return
    assert not outcome.passed, f"passes now: remove it from expected failures ({EXPECTED_FILE})"
    assert outcome.status is KIND_SHOWS[listed.kind], (
        f"listed as {listed.kind} ({KIND_SHOWS[listed.kind].value}), but {outcome.status.value}: "
        f"{outcome.detail}"
    )


def test_the_conformance_cases_are_all_there(shared_dir: Path) -> None:
    opa = shared_dir / "conformance" / "opa"
    assert opa == OPA_CASES, "the runner must read the cases the shared_dir fixture names"
    assert len(list(opa.rglob("*.yaml"))) == 169
    assert len(load_cases(opa)) == 516


def test_every_expected_failure_names_a_case(
    shared_dir: Path, expected: dict[str, ExpectedFailure]
) -> None:
    ids = {case.id for case in load_cases(shared_dir / "conformance" / "opa")}
    assert sorted(set(expected) - ids) == []
    for entry in expected.values():
        assert entry.kind in KIND_SHOWS, f"{entry.id}: unknown kind {entry.kind!r}"
        assert entry.reason.strip() and "\n" not in entry.reason, f"{entry.id}: one-line reason"


RELEASE = "package broker.release\n\ndefault allow := false\n\n"


@dataclass(frozen=True)
class Gap:
    """A release policy hitting one gap, and exactly what the broker gets from it."""

    kind: str
    label: str
    rules: str
    input: Mapping[str, Any]
    shows: object
    """``False`` or ``UNDEFINED`` (a value), or the error class the adapter raises."""
    match: str | None = None
    path: str = "broker/release/allow"


GAPS = [
    Gap(
        "missing_builtin",
        "missing_builtin",
        'allow if strings.split_n(input.user, ";", 2)[0] == "alice"',
        {"user": "alice;alice@example.com"},
        EngineFailure,
        "could not find function strings.split_n",
    ),
    # OPA, not strict, makes the error undefined, so `not` would allow; regorus raises.
    Gap(
        "strict_builtin_error",
        "strict_builtin_error",
        'allow if not regex.match("$^[[[", input.name)',
        {"name": "alice"},
        EngineFailure,
        "invalid regex",
    ),
    Gap(
        "with_builtin_mock",
        "with_builtin_mock",
        "f(_) := 2\n\nallow if {\n\tf(input.xs) == 1 with f as count\n}",
        {"xs": [1]},
        EngineFailure,
        "use of undefined variable `count` is unsafe",
    ),
    Gap(
        "unsupported_syntax",
        "unsupported_syntax-v0",
        "allow {\n\tinput.ok\n}",
        {"ok": True},
        PolicyLoadError,
        "`if` keyword is required before rule body",
    ),
    Gap(
        "unsupported_syntax",
        "unsupported_syntax-not_body",
        "allow if not {\n\tinput.a\n\tinput.b\n}",
        {"a": True, "b": False},
        PolicyLoadError,
    ),
    Gap(
        "number_precision",
        "number_precision",
        "allow if input.kwh < 1e400",
        {"kwh": 1},
        PolicyLoadError,
        "out of range",
    ),
    Gap(
        "engine_panic",
        "engine_panic",
        "allow if strings.count(input.meter, input.needle) > 0",
        {"meter": "58534D0000000001", "needle": ""},
        EngineFailure,
        "policy engine crashed: window size must be non-zero",
    ),
    # OPA answers true, so allows; regorus answers false. A gap of this kind can also allow,
    # hence test_a_builtin_answering_otherwise_than_opa_is_refused_by_check.
    Gap(
        "semantics",
        "semantics",
        'allow if glob.match("{**/,}x", null, input.path)',
        {"path": "x"},
        False,
    ),
]


def _decide(rules: str, input_doc: Mapping[str, Any], path: str = "broker/release/allow") -> Any:
    engine = EmbeddedEngine()
    engine.load({"broker/release/policy.rego": RELEASE + rules + "\n"}, {})
    return engine.evaluate(path, input_doc)


@pytest.mark.parametrize("gap", GAPS, ids=[gap.label for gap in GAPS])
def test_gap_fails_closed(gap: Gap) -> None:
    if isinstance(gap.shows, type):
        with pytest.raises(gap.shows, match=gap.match):
            _decide(gap.rules, gap.input, gap.path)
        return
    assert gap.shows is False or gap.shows is UNDEFINED
    assert _decide(gap.rules, gap.input, gap.path) is gap.shows


def test_every_kind_of_gap_has_a_fail_closed_test(expected: dict[str, ExpectedFailure]) -> None:
    assert {gap.kind for gap in GAPS} == set(KIND_SHOWS)
    assert {entry.kind for entry in expected.values()} <= set(KIND_SHOWS)


SEMANTICS_GAPS = [
    'strings.count(input.meter, "11") > 2',
    'glob.match("{**/,}x", null, input.path)',
    "yaml.is_valid(input.text)",
]
"""Calls of the builtins whose ``semantics`` cases regorus answers otherwise than OPA:
``strings.count("11111", "11")`` is 4 in regorus and 2 in OPA, so a policy bounding a count from
below would allow where OPA denies."""


@pytest.mark.parametrize("call", SEMANTICS_GAPS, ids=[c.split("(")[0] for c in SEMANTICS_GAPS])
def test_a_builtin_answering_otherwise_than_opa_is_refused_by_check(
    call: str, tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(
        shipped_bundle_dir(), candidate, ignore=shutil.ignore_patterns("*.md", "*.yaml")
    )
    builtin = call.split("(")[0]
    (candidate / "broker" / "release" / "gap.rego").write_text(
        "# METADATA\n# title: gap\n# description: calls a builtin regorus answers otherwise\n"
        f"package broker.release\n\ngap if {call}\n"
    )
    report = check_bundle(load_bundle(candidate))
    assert not report.ok  # PolicyStore.activate refuses a bundle failing check
    problems = [p for p in report.problems if p.file == "broker/release/gap.rego"]
    assert [(p.line, p.kind) for p in problems] == [(6, "builtin")], report.problems
    assert problems[0].message.startswith(f"{builtin} is not allowed: it differs from OPA")


def test_a_panic_does_not_break_later_decisions() -> None:
    engine = EmbeddedEngine()
    rules = "allow if strings.count(input.meter, input.needle) > 0\n"
    engine.load({"broker/release/policy.rego": RELEASE + rules}, {})
    with pytest.raises(EngineFailure, match="crashed: window size must be non-zero"):
        engine.evaluate("broker/release/allow", {"meter": "58534D", "needle": ""})
    assert engine.evaluate("broker/release/allow", {"meter": "58534D", "needle": "4D"}) is True
    assert engine.evaluate("broker/release/allow", {"meter": "58534D", "needle": "4E"}) is False


def _query_case(query: str, want: list[dict[str, Any]], wants_error: bool = False) -> Case:
    return Case("runner", query, query, (), {}, None, want, wants_error, sort_bindings=False)


def test_the_runner_compares_values_as_opa_does() -> None:
    assert canonical(1) == canonical(1.0)
    assert canonical(True) != canonical(1)
    assert canonical([1, 2, 3]) != canonical([3, 1, 2])
    assert canonical({1: "a", "b": None}) == canonical({"b": None, "1": "a"})


@pytest.mark.parametrize(
    ("query", "want", "wants_error", "status"),
    [
        ("x = 1", [{"x": 1.0}], False, Status.PASSED),
        ("x = 1", [{"x": 2}], False, Status.WRONG_RESULT),
        ("x = 1", [{"x": 1}], True, Status.NO_ERROR),
        ("1 == 2", [], False, Status.PASSED),
        ("1 == 2", [{}], False, Status.WRONG_RESULT),
        ("x := 1 / 0", [], True, Status.PASSED),
        ("x := 1 / 0", [], False, Status.RAISED),
        ("true", [{}], False, Status.PASSED),
        ("x := input.missing", [], False, Status.PASSED),
        ("x := input.missing", [{"x": None}], False, Status.WRONG_RESULT),
        ("x := {3, 1, 2}", [{"x": [1, 2, 3]}], False, Status.PASSED),
        ('x := {{"a": 1}, [1], "s"}', [{"x": ["s", [1], {"a": 1}]}], False, Status.PASSED),
        ('x := {1: "a", {"b": [2]}: 3}', [{"x": {1: "a", '{"b":[2]}': 3}}], False, Status.PASSED),
        # regorus puts a set before an object, OPA after it: a case hitting this fails
        ('x := {{"a": 1}, {1}}', [{"x": [{"a": 1}, [1]]}], False, Status.WRONG_RESULT),
    ],
)
def test_the_runner_tells_agreement_from_disagreement(
    query: str, want: list[dict[str, Any]], wants_error: bool, status: Status
) -> None:
    assert run_case(_query_case(query, want, wants_error)).status is status
