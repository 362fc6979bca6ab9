"""``broker policy check``: everything about a bundle that can be known without running it.

What a privacy officer gets told, each with the file and line:
- the manifest: ``rego_version`` 1, roots, and every package and data path inside a root;
- Rego that does not parse (regorus's own message) or is not Rego v1;
- a package that does not match its directory (``broker/release/*.rego`` holds
  ``package broker.release``; tests beside it may use ``broker.release_test``);
- a call outside the builtin allow-list: the policy reads no clock (``time.now_ns``), no
  network (``http.send``, ``net.*``), no randomness, no runtime (``opa.runtime``). Time comes in
  the input as ``now_s``;
- formatting: ``opa fmt``'s whitespace rules that can be checked without OPA (tab indentation,
  no trailing whitespace, one final newline, no CRLF); OPA itself is not available here;
- metadata: a package-level ``# METADATA`` block with ``title`` and ``description`` in every
  policy module; every reason code the decision can give is declared in ``custom.codes``;
- the purpose catalogue: legal bases, tiers, granularities, recipient kinds and categories
  that exist, positive retention;
- the decision itself: with an empty input it must exist and deny (a policy that never defines
  ``allow``, or allows by default, is refused).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import regorus

from broker.policy.bundle import Bundle, Module
from broker.rego.engine import (
    UNDEFINED,
    EmbeddedEngine,
    EngineFailure,
    PolicyLoadError,
    clean_engine_message,
    rule_ref,
)
from consent_ledger import GRANULARITY_S

TIERS = ("raw", "pseudonymised", "generalised", "aggregated", "dp")
LEGAL_BASES = frozenset({"consent", "legal_obligation", "contract"})

# Pure builtins a release policy may call. Everything else is refused at load: a policy that
# could read the clock, the network, randomness or the runtime would not be a function of its
# input, and decisions could be neither replayed (`policy diff`) nor audited.
ALLOWED_BUILTINS = frozenset(
    {
        "abs", "all", "any", "array.concat", "array.reverse", "array.slice", "base64.decode",
        "base64.encode", "base64.is_valid", "base64url.decode", "base64url.encode",
        "base64url.encode_no_pad", "ceil", "concat", "contains", "count", "crypto.sha256",
        "endswith", "floor", "format_int", "hex.decode", "hex.encode", "indexof",
        "indexof_n", "intersection", "is_array", "is_boolean", "is_null", "is_number",
        "is_object", "is_set", "is_string", "json.filter", "json.is_valid", "json.marshal",
        "json.patch", "json.remove", "json.unmarshal", "lower", "max", "min", "numbers.range",
        "numbers.range_step", "object.filter", "object.get", "object.keys", "object.remove",
        "object.subset", "object.union", "object.union_n", "print", "product", "regex.find_n",
        "regex.is_valid", "regex.match", "regex.replace", "regex.split", "replace", "round",
        "semver.compare", "semver.is_valid", "sort", "split", "sprintf", "startswith",
        "strings.any_prefix_match", "strings.any_suffix_match",
        "strings.replace_n", "strings.reverse", "substring", "sum", "time.add_date",
        "time.clock", "time.date", "time.diff", "time.format", "time.parse_duration_ns",
        "time.parse_ns", "time.parse_rfc3339_ns", "time.weekday", "to_number", "trim",
        "trim_left", "trim_prefix", "trim_right", "trim_space", "trim_suffix", "type_name",
        "union", "units.parse", "units.parse_bytes", "upper", "urlquery.decode",
        "urlquery.encode", "urlquery.encode_object",
    }
)  # fmt: skip
FORBIDDEN_WHY = {
    "http.send": "reads the network",
    "net.": "reads the network",
    "opa.runtime": "reads the runtime environment",
    "time.now_ns": "reads the clock (time comes in the input as now_s)",
    "rand.": "is random",
    "uuid.": "is random",
    "io.jwt.": "reads the clock when it verifies",
    "trace": "writes to the engine's trace",
    # regorus answers these differently from OPA (policies/conformance-expected-failures.yaml,
    # kind semantics): a policy using them could allow what OPA would deny.
    "strings.count": "differs from OPA in regorus (counts overlapping matches)",
    "glob.match": "differs from OPA in regorus",
    "yaml.is_valid": "differs from OPA in regorus",
}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    modules: int = 0
    tests: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str, line: int, kind: str, message: str) -> None:
        self.problems.append(Problem(file, line, kind, message))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "modules": self.modules,
            "tests": self.tests,
            "problems": [p.__dict__ for p in self.problems],
        }


def check_bundle(bundle: Bundle) -> CheckReport:
    report = CheckReport(
        modules=sum(1 for m in bundle.modules if not m.is_test),
        tests=sum(1 for m in bundle.modules if m.is_test),
    )
    roots = _check_manifest(bundle, report)
    parsed_ok = True
    for module in bundle.modules:
        _check_format(module, report)
        _check_package(module, roots, report)
        if not module.is_test:
            _check_metadata(module, report)
        try:
            EmbeddedEngine.build({module.path: module.text}, {})
        except PolicyLoadError as exc:
            parsed_ok = False
            report.add(module.path, _error_line(exc.message), "syntax", exc.message)
    _check_catalogue(bundle, report)
    if not parsed_ok:
        return report
    try:
        engine = EmbeddedEngine.build(bundle.all_modules(), bundle.data)
    except PolicyLoadError as exc:
        report.add(".", _error_line(exc.message), "syntax", exc.message)
        return report
    _check_builtins(engine, bundle, report)
    if not any(p.kind == "builtin" for p in report.problems):
        _check_decision(bundle, report)
    return report


def _error_line(message: str) -> int:
    match = re.search(r"\.rego:(\d+):\d+", message)
    return int(match.group(1)) if match else 0


def _check_manifest(bundle: Bundle, report: CheckReport) -> list[str]:
    manifest = bundle.manifest
    if manifest.get("rego_version") != 1:
        report.add(
            ".manifest", 0, "manifest", "rego_version must be 1 (the broker runs Rego v1 only)"
        )
    roots = manifest.get("roots")
    if not isinstance(roots, list) or not roots or not all(isinstance(r, str) for r in roots):
        report.add(".manifest", 0, "manifest", "roots must be a non-empty list of paths")
        return []
    return [r.strip("/") for r in roots]


def _under_roots(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _check_package(module: Module, roots: list[str], report: CheckReport) -> None:
    if module.package is None:
        report.add(module.path, 1, "package", "no package declaration")
        return
    directory = module.path.rsplit("/", 1)[0].replace("/", ".") if "/" in module.path else ""
    expected = {directory, directory + "_test"} if module.is_test else {directory}
    if module.package not in expected:
        report.add(
            module.path,
            _line_of(module.text, "package "),
            "package",
            f"package {module.package} does not match its directory (want package {directory})",
        )
    if roots and not _under_roots(module.package.replace(".", "/"), roots):
        report.add(module.path, 1, "manifest", f"package {module.package} is outside the roots")


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(needle):
            return number
    return 0


def _check_format(module: Module, report: CheckReport) -> None:
    text = module.text
    if "\r" in text:
        report.add(module.path, 0, "format", "CRLF line endings (use LF)")
    if not text.endswith("\n") or text.endswith("\n\n"):
        report.add(module.path, 0, "format", "the file must end with exactly one newline")
    for number, line in enumerate(text.splitlines(), 1):
        if line != line.rstrip():
            report.add(module.path, number, "format", "trailing whitespace")
        indent = line[: len(line) - len(line.lstrip())]
        if " " in indent and not line.lstrip().startswith("#"):
            report.add(module.path, number, "format", "indent with tabs, as opa fmt does")


def _check_metadata(module: Module, report: CheckReport) -> None:
    package_line = _line_of(module.text, "package ")
    blocks = [b for b in module.metadata if b.scope_line <= package_line]
    if not blocks:
        report.add(module.path, package_line, "metadata", "no # METADATA block before the package")
        return
    fields = blocks[0].fields
    for key in ("title", "description"):
        if not isinstance(fields.get(key), str) or not str(fields.get(key)).strip():
            report.add(module.path, blocks[0].line, "metadata", f"the METADATA block has no {key}")
    declared = module.reason_codes()
    for number, code in _codes_used(module.text):
        if code not in declared:
            report.add(
                module.path, number, "metadata", f"reason code {code!r} is not in METADATA codes"
            )


_CODE_USE = re.compile(r'^deny contains "([a-z0-9_]+)"|^basis\([^)]*\) := \{"code": "([a-z0-9_]+)"')


def _codes_used(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        match = _CODE_USE.match(line)
        if match:
            yield number, match.group(1) or match.group(2)


def _calls(node: Any) -> Iterator[tuple[str, int]]:
    """(dotted function name, line) of every call in a regorus AST."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            call = item.get("Call")
            if isinstance(call, dict):
                name = _dotted(call.get("fcn"))
                if name is not None:
                    yield name, int(call.get("span", {}).get("line", 0))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _dotted(ref: Any) -> str | None:
    if not isinstance(ref, dict):
        return None
    if "Var" in ref:
        return str(ref["Var"]["value"])
    if "RefDot" in ref:
        inner = _dotted(ref["RefDot"].get("refr"))
        field_ = ref["RefDot"].get("field")
        name = field_[1] if isinstance(field_, list) and len(field_) > 1 else None
        return f"{inner}.{name}" if inner is not None and name is not None else None
    return None


def _rule_names(ast: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for rule in ast.get("rules", []):
        if "Spec" in rule:
            head = next(iter(rule["Spec"]["head"].values()))
            name = _dotted(head.get("refr"))
        else:
            name = _dotted(rule.get("Default", {}).get("refr"))
        if name:
            names.add(name.split(".")[0])
    return names


def _check_builtins(engine: regorus.Engine, bundle: Bundle, report: CheckReport) -> None:
    try:
        asts = json.loads(engine.get_ast_as_json())
    except (RuntimeError, ValueError) as exc:
        report.add(
            ".", 0, "builtin", f"cannot inspect the policy: {clean_engine_message(str(exc))}"
        )
        return
    imported_aliases = {"data", "input"}
    for entry in asts:
        path = entry["source"]["file"]
        ast = entry["ast"]
        local = _rule_names(ast)
        for name, line in _calls(ast):
            root = name.split(".")[0]
            if root in imported_aliases or name in local or root in local:
                continue
            if _imported(ast, root):
                continue
            if name in ALLOWED_BUILTINS:
                continue
            why = next((w for k, w in FORBIDDEN_WHY.items() if name == k or name.startswith(k)), "")
            message = f"{name} is not allowed" + (f": it {why}" if why else " (not on the list)")
            report.add(path, line, "builtin", message)
    del bundle


def _imported(ast: Mapping[str, Any], alias: str) -> bool:
    for item in ast.get("imports", []):
        ref = _dotted(item.get("refr"))
        if (
            ref
            and ref.startswith("data.")
            and (item.get("as") == alias or ref.endswith("." + alias))
        ):
            return True
    return False


def _check_catalogue(bundle: Bundle, report: CheckReport) -> None:
    where = "broker/catalogue/data.json"
    catalogue = bundle.data.get("broker", {}).get("catalogue")
    if not isinstance(catalogue, Mapping):
        report.add(where, 0, "catalogue", "no purpose catalogue at data.broker.catalogue")
        return
    tiers = catalogue.get("tiers")
    if not isinstance(tiers, Mapping) or set(tiers) != set(TIERS):
        known = sorted(tiers) if isinstance(tiers, Mapping) else tiers
        report.add(where, 0, "catalogue", f"tiers must be exactly {list(TIERS)}, not {known}")
        tiers = {}
    for name, tier in dict(tiers).items():
        if not isinstance(tier, Mapping) or tier.get("rank") != TIERS.index(name):
            report.add(where, 0, "catalogue", f"tier {name}: rank must be {TIERS.index(name)}")
        elif not isinstance(tier.get("fields_drop"), list) or not isinstance(
            tier.get("obligations"), list
        ):
            report.add(where, 0, "catalogue", f"tier {name}: fields_drop and obligations are lists")
    if catalogue.get("tier_order") != list(TIERS):
        report.add(where, 0, "catalogue", f"tier_order must be {list(TIERS)}")
    granularities = catalogue.get("granularities")
    if granularities != dict(GRANULARITY_S):
        # the ledger, the transforms and the "finer than daily" rule reason on this ladder
        report.add(where, 0, "catalogue", f"granularities must be {dict(GRANULARITY_S)}")
        granularities = dict(GRANULARITY_S)
    categories = catalogue.get("categories", {})
    kinds = set(catalogue.get("recipient_kinds", []))
    purposes = catalogue.get("purposes")
    if not isinstance(purposes, Mapping) or not purposes:
        report.add(where, 0, "catalogue", "no purposes")
        return
    for name, purpose in purposes.items():
        _check_purpose(where, name, purpose, granularities, categories, kinds, report)


def _check_purpose(
    where: str,
    name: str,
    purpose: Any,
    granularities: Mapping[str, Any],
    categories: Mapping[str, Any],
    kinds: set[str],
    report: CheckReport,
) -> None:
    def bad(message: str) -> None:
        report.add(where, 0, "catalogue", f"purpose {name}: {message}")

    if not isinstance(purpose, Mapping):
        bad("must be an object")
        return
    if purpose.get("legal_basis") not in LEGAL_BASES:
        bad(f"legal_basis {purpose.get('legal_basis')!r} is not one of {sorted(LEGAL_BASES)}")
    if purpose.get("default_tier") not in TIERS:
        bad(f"default_tier {purpose.get('default_tier')!r} is not one of {list(TIERS)}")
    if purpose.get("finest_granularity") not in granularities:
        bad(f"finest_granularity {purpose.get('finest_granularity')!r} is not a granularity")
    unknown_kinds = set(purpose.get("recipient_kinds", [])) - kinds
    if not purpose.get("recipient_kinds") or unknown_kinds:
        bad(f"recipient_kinds must be non-empty and known (unknown: {sorted(unknown_kinds)})")
    unknown_categories = set(purpose.get("categories", [])) - set(categories)
    if not purpose.get("categories") or unknown_categories:
        bad(f"categories must be non-empty and known (unknown: {sorted(unknown_categories)})")
    retention = purpose.get("retention_days")
    if not isinstance(retention, int) or isinstance(retention, bool) or retention <= 0:
        bad("retention_days must be a positive integer")
    if not isinstance(purpose.get("explicit_consent"), bool):
        bad("explicit_consent must be true or false")
    if not isinstance(purpose.get("aggregate_release", False), bool):
        bad("aggregate_release (aggregates lawful without consent) must be true or false")
    if purpose.get("legal_basis") == "legal_obligation" and purpose.get("default_tier") in (
        "raw",
        "pseudonymised",
        "generalised",
    ):
        bad("a legal-obligation purpose releases aggregates only (R4.4)")


def _check_decision(bundle: Bundle, report: CheckReport) -> None:
    engine = EmbeddedEngine()
    try:
        engine.load(bundle.policies(), bundle.data)
        value = engine.evaluate(bundle.decision_path(), {})
    except (PolicyLoadError, EngineFailure) as exc:
        report.add(".", 0, "decision", f"{rule_ref(bundle.decision_path())} fails: {exc.message}")
        return
    if value is UNDEFINED or not isinstance(value, Mapping) or "allow" not in value:
        report.add(
            ".",
            0,
            "decision",
            f"{rule_ref(bundle.decision_path())} must be an object with allow for every input "
            "(an empty input gave none)",
        )
    elif value["allow"] is not False:
        report.add(".", 0, "decision", "an empty input must be denied (deny by default)")
    elif not value.get("reasons"):
        report.add(".", 0, "decision", "a denial must carry reasons")
