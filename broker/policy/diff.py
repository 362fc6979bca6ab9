"""``broker policy diff`` and ``explain``: what a candidate would decide, before it runs.

``diff`` replays the inputs recorded in the decision log against the candidate bundle and
compares each answer with the recorded one: allow that would become deny and back, tier and
granularity changes, counted by purpose and recipient, with example decision ids. The inputs
name customers only by keyed hash, so a replay needs no personal data.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.policy.bundle import Bundle
from broker.policy.decision import Decision, parse_result
from broker.rego.engine import EmbeddedEngine, EngineFailure, PolicyEngine

CHANGE_KINDS = ("allow_to_deny", "deny_to_allow", "tier", "granularity", "reasons")
EXAMPLES = 5


@dataclass
class DiffReport:
    replayed: int = 0
    changed: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    groups: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "changed": self.changed,
            "by_kind": {k: self.by_kind.get(k, 0) for k in CHANGE_KINDS},
            "by_purpose_and_recipient": [
                {"purpose": p, "recipient": r, **{k: c.get(k, 0) for k in CHANGE_KINDS}}
                for (p, r), c in sorted(self.groups.items())
            ],
            "examples": self.examples,
        }


def changes(old: Mapping[str, Any], new: Decision) -> list[str]:
    """The kinds of change between a recorded result and a new decision."""
    kinds: list[str] = []
    if old.get("allow") and not new.allow:
        kinds.append("allow_to_deny")
    elif not old.get("allow") and new.allow:
        kinds.append("deny_to_allow")
    elif new.allow:
        if old.get("tier") != new.tier:
            kinds.append("tier")
        if old.get("granularity") != new.granularity:
            kinds.append("granularity")
    else:
        old_codes = sorted(r.get("code", "") for r in old.get("reasons", []))
        if old_codes != sorted(r.code for r in new.reasons):
            kinds.append("reasons")
    return kinds


def candidate_engine(bundle: Bundle) -> EmbeddedEngine:
    """The candidate as the broker would run it (its decision compiled for the VM)."""
    engine = EmbeddedEngine(compiled=(bundle.decision_path(),))
    engine.load(bundle.policies(), bundle.data)
    return engine


def evaluate(engine: PolicyEngine, bundle: Bundle, input_json: str, decision_id: str) -> Decision:
    try:
        evaluate_json = getattr(engine, "evaluate_json", None)
        if evaluate_json is not None:
            value = evaluate_json(bundle.decision_path(), input_json)
        else:
            value = engine.evaluate(bundle.decision_path(), json.loads(input_json))
    except EngineFailure as exc:
        value = {"allow": False, "error": exc.message}
    return parse_result(decision_id, bundle.revision or "candidate", value)


def diff(
    rows: Iterable[Mapping[str, Any]],
    candidate: Bundle,
    progress: Callable[[int], None] | None = None,
) -> DiffReport:
    """Replay ``rows`` (decision-log rows: decision_id, purpose, recipient, input_json,
    result_json) against ``candidate``."""
    engine = candidate_engine(candidate)
    report = DiffReport()
    for row in rows:
        new = evaluate(engine, candidate, row["input_json"], row["decision_id"])
        old = json.loads(row["result_json"])
        report.replayed += 1
        kinds = changes(old, new)
        if kinds:
            report.changed += 1
            group = report.groups.setdefault((row["purpose"], row["recipient"]), Counter())
            for kind in kinds:
                report.by_kind[kind] += 1
                group[kind] += 1
                examples = report.examples.setdefault(kind, [])
                if len(examples) < EXAMPLES:
                    examples.append(
                        {
                            "decision_id": row["decision_id"],
                            "purpose": row["purpose"],
                            "recipient": row["recipient"],
                            "was": {k: old.get(k) for k in ("allow", "tier", "granularity")},
                            "now": {
                                "allow": new.allow,
                                "tier": new.tier,
                                "granularity": new.granularity,
                            },
                            "reasons": [r.code for r in new.reasons],
                        }
                    )
        if progress is not None:
            progress(1)
    return report


def explain(bundle: Bundle, input_doc: Mapping[str, Any]) -> dict[str, Any]:
    """The decision for one input, with its reasons and the facts the policy looked at."""
    engine = candidate_engine(bundle)
    input_json = json.dumps(input_doc, sort_keys=True)
    decision = evaluate(engine, bundle, input_json, "explain")
    package = bundle.decision_path().rsplit("/", 1)[0]
    deny: Any = []
    try:
        deny_value = engine.evaluate_json(f"{package}/deny", input_json)
        deny = sorted(deny_value) if isinstance(deny_value, list | set | frozenset) else []
    except EngineFailure:
        deny = ["(the deny reasons could not be evaluated)"]
    consents = [
        c.get("consent_id") for c in input_doc.get("consents", []) if isinstance(c, Mapping)
    ]
    result = decision.as_json()
    result.pop("decision_id")
    return {
        "decision": result,
        "deny_reasons_that_hold": deny,
        "consents_in_input": consents,
        "revision": bundle.revision or "(candidate, not activated)",
    }
