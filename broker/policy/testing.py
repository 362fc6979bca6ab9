"""``broker policy test``: run the bundle's ``test_`` rules, pass or fail each, and rule coverage.

A test passes when its rule is true; false or undefined is a failure and an evaluation error is
an error, as in ``opa test``. Coverage is regorus's line coverage of the policy modules (test
modules excluded) gathered over the whole run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from broker.policy.bundle import Bundle
from broker.policy.check import _dotted, _rule_names
from broker.rego.engine import EmbeddedEngine, clean_engine_message


@dataclass(frozen=True)
class TestResult:
    package: str
    name: str
    outcome: str
    """``pass``, ``fail`` or ``error``."""
    duration_us: int
    message: str = ""


@dataclass
class TestReport:
    results: list[TestResult] = field(default_factory=list)
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.outcome == "pass")

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.outcome == "pass" for r in self.results)

    def coverage_percent(self) -> float:
        covered = sum(len(c["covered"]) for c in self.coverage.values())
        total = covered + sum(len(c["not_covered"]) for c in self.coverage.values())
        return round(100.0 * covered / total, 1) if total else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "passed": self.passed,
            "failed": sum(1 for r in self.results if r.outcome == "fail"),
            "errors": sum(1 for r in self.results if r.outcome == "error"),
            "tests": [r.__dict__ for r in self.results],
            "coverage_percent": self.coverage_percent(),
            "coverage": {
                path: {"percent": c["percent"], "not_covered": c["not_covered"]}
                for path, c in self.coverage.items()
            },
        }


def run_tests(bundle: Bundle) -> TestReport:
    """Evaluate every ``test_*`` rule of the test modules (``*_test.rego``)."""
    engine = EmbeddedEngine.build(bundle.all_modules(), bundle.data)
    engine.set_enable_coverage(True)
    engine.set_input_json("{}")
    report = TestReport()
    tests = {m.path for m in bundle.modules if m.is_test}
    for entry in json.loads(engine.get_ast_as_json()):
        if entry["source"]["file"] not in tests:
            continue
        package = _package(entry["ast"])
        for name in sorted(n for n in _rule_names(entry["ast"]) if n.startswith("test_")):
            report.results.append(_run_one(engine, package, name))
    policy_files = {m.path for m in bundle.modules if not m.is_test}
    for item in json.loads(engine.get_coverage_report_as_json()).get("files", []):
        if item["path"] in policy_files:
            covered, missed = item["covered"], item["not_covered"]
            total = len(covered) + len(missed)
            percent = round(100.0 * len(covered) / total, 1) if total else 100.0
            report.coverage[item["path"]] = {
                "covered": covered,
                "not_covered": missed,
                "percent": percent,
            }
    return report


def _package(ast: dict[str, Any]) -> str:
    return _dotted(ast["package"]["refr"]) or ""


def _run_one(engine: Any, package: str, name: str) -> TestResult:
    started = time.perf_counter_ns()
    try:
        value = engine.eval_rule(f"data.{package}.{name}")
    except RuntimeError as exc:
        elapsed = (time.perf_counter_ns() - started) // 1000
        return TestResult(package, name, "error", elapsed, clean_engine_message(str(exc)))
    elapsed = (time.perf_counter_ns() - started) // 1000
    if value is True:
        return TestResult(package, name, "pass", elapsed)
    shown = "undefined" if value is None else json.dumps(value)
    return TestResult(package, name, "fail", elapsed, f"the rule is {shown}, not true")
