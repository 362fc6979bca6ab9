"""Release decisions, policy diff and consent appends.

Targets: with 10 k active consents in the ledger, a decision through the adapter p50 <= 20 µs
and p99 <= 100 µs (the decision gets the covering consents in its input); ``policy diff`` over
100 k recorded decisions <= 30 s; consent event appends >= 20 k/s.

Prints one JSON object:
- ``decide_*``: ``DecisionPoint.decide`` alone (input built, evaluated, parsed, record kept), on
  the compiled decision (regorus's VM, the default) and on the interpreter, for a mix of requests
  from the ledger's own customers (most allowed) and requests nobody consented to (denied);
- ``covering_and_decide_*``: the ledger query for the covering consents plus the decision;
- ``engine_only_*``: the engine's evaluation of an input already serialised;
- ``diff_*``: ``--diff-decisions`` decisions recorded in a fresh SQLite decision log, then read
  and replayed against a candidate that changes one purpose (seconds, end to end);
- ``consent``: ``bench.consent.measure`` (appends on each backend, covering latency).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.common import database, new_log
from bench.consent import PURPOSES, RECIPIENTS, T0, ledger_with, measure
from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.policy.bundle import load_bundle, shipped_bundle_dir
from broker.policy.decision import TABLE, DecisionLog, DecisionPoint, Facts, ReleaseRequest
from broker.policy.diff import diff
from broker.policy.facts import covering_consents
from broker.rego.engine import EmbeddedEngine
from consent_ledger import LedgerState

NOW = T0 + timedelta(days=1)
HASHER = SubjectHasher(b"h" * 32)


def _requests(active: int, n: int, seed: int = 7) -> list[ReleaseRequest]:
    """Requests of the ledger's customers: 3 in 4 as consented, 1 in 4 for marketing (denied)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i = rng.randrange(active)
        purpose = PURPOSES[i % len(PURPOSES)] if rng.random() < 0.75 else "marketing"
        out.append(
            ReleaseRequest(
                recipient_id=RECIPIENTS[i % len(RECIPIENTS)],
                recipient_kind="researcher"
                if purpose == "energy_efficiency_research"
                else "third_party",
                purpose=purpose,
                categories=("consumption",),
                granularity="monthly",
                period_from=T0 - timedelta(days=1),
                period_to=T0 + timedelta(hours=12),
                subject=f"C-{i:08d}",
            )
        )
    return out


def _percentiles(samples: list[int]) -> tuple[float, float]:
    samples.sort()
    return (
        round(samples[len(samples) // 2] / 1000, 1),
        round(samples[len(samples) * 99 // 100] / 1000, 1),
    )


def _timed(call: Callable[[Any], object], items: list[Any]) -> tuple[float, float]:
    clock = time.perf_counter_ns
    samples = []
    for item in items:
        start = clock()
        call(item)
        samples.append(clock() - start)
    return _percentiles(samples)


def _point(compiled: bool) -> DecisionPoint:
    bundle = load_bundle(shipped_bundle_dir())
    engine = EmbeddedEngine(compiled=(bundle.decision_path(),) if compiled else ())
    engine.load(bundle.policies(), bundle.data)
    return DecisionPoint(
        engine, "bench", bundle.decision_path(), FixedClock(NOW), HASHER, new_log()
    )


def _with_ledger(point: DecisionPoint, state: LedgerState) -> Callable[[ReleaseRequest], object]:
    def decide(request: ReleaseRequest) -> object:
        return point.decide(Facts(request, covering_consents(state, request, NOW), NOW))

    return decide


def decisions(state: LedgerState, active: int, n: int) -> dict[str, Any]:
    requests = _requests(active, n)
    facts = [Facts(r, covering_consents(state, r, NOW), NOW) for r in requests]
    result: dict[str, Any] = {
        "decisions": n,
        "allowed_fraction": None,
        "target_decide_p50_us": 20,
        "target_decide_p99_us": 100,
    }
    for label, compiled in (("compiled", True), ("interpreter", False)):
        point = _point(compiled)
        for f in facts[:2000]:  # warm the engine's clones and caches
            point.decide(f)
        point.pending.clear()
        p50, p99 = _timed(point.decide, facts)
        allowed = sum(1 for r in point.pending if r.decision.allow)
        result["allowed_fraction"] = round(allowed / n, 3)
        point.pending.clear()
        result[f"decide_{label}_p50_us"], result[f"decide_{label}_p99_us"] = p50, p99
        p50, p99 = _timed(_with_ledger(point, state), requests)
        point.pending.clear()
        result[f"covering_and_decide_{label}_p50_us"] = p50
        result[f"covering_and_decide_{label}_p99_us"] = p99
    point = _point(True)
    for f in facts[:1000]:
        point.decide(f)
    texts = [r.input_json for r in point.pending]
    engine = point.engine
    assert isinstance(engine, EmbeddedEngine)
    p50, p99 = _timed(lambda t: engine.evaluate_json(point.decision_path, t), texts * 5)
    result["engine_only_compiled_p50_us"], result["engine_only_compiled_p99_us"] = p50, p99
    return result


def _candidate(tmp: Path) -> Path:
    """The shipped bundle with one change a privacy officer might make: demand response
    becomes generalised and daily at the finest."""
    target = tmp / "candidate"
    shutil.copytree(shipped_bundle_dir(), target)
    path = target / "broker/catalogue/data.json"
    catalogue = json.loads(path.read_text())
    catalogue["purposes"]["demand_response"].update(
        default_tier="generalised", finest_granularity="daily"
    )
    catalogue["purposes"]["personalised_service"]["default_tier"] = "pseudonymised"
    path.write_text(json.dumps(catalogue))
    return target


def policy_diff(state: LedgerState, active: int, n: int) -> dict[str, Any]:
    point = _point(True)
    rng = random.Random(11)
    requests = _requests(active, 5000)
    with database("sqlite") as db, tempfile.TemporaryDirectory() as tmp:
        recorded = 0
        while recorded < n:
            batch = min(10_000, n - recorded)
            for _ in range(batch):
                r = requests[rng.randrange(len(requests))]
                point.decide(Facts(r, covering_consents(state, r, NOW), NOW))
            with db.transaction() as session:
                DecisionLog.write(session, point.pending)
            point.pending.clear()
            recorded += batch
        candidate = load_bundle(_candidate(Path(tmp)))
        start = time.perf_counter()
        with db.transaction() as session:
            query = select(
                TABLE.c.decision_id,
                TABLE.c.purpose,
                TABLE.c.recipient,
                TABLE.c.input_json,
                TABLE.c.result_json,
            ).execution_options(yield_per=5000)
            rows = (dict(row._mapping) for row in session.execute(query))
            report = diff(rows, candidate)
        seconds = time.perf_counter() - start
    return {
        "diff_decisions": report.replayed,
        "diff_changed": report.changed,
        "diff_by_kind": report.as_json()["by_kind"],
        "diff_seconds": round(seconds, 2),
        "diff_decisions_per_s": round(report.replayed / seconds),
        "target_diff_seconds_100k": 30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--consents", type=int, default=10_000, help="active consents in the ledger"
    )
    parser.add_argument("--decisions", type=int, default=20_000, help="decisions timed")
    parser.add_argument(
        "--diff-decisions", type=int, default=100_000, help="decisions replayed by diff"
    )
    parser.add_argument(
        "--consent-events", type=int, default=20_000, help="consent events appended"
    )
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="backends for consent appends"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    state = ledger_with(args.consents)
    result: dict[str, Any] = {"benchmark": "policy", "active_consents": state.active_count()}
    result.update(decisions(state, args.consents, args.decisions))
    result.update(policy_diff(state, args.consents, args.diff_decisions))
    result["consent"] = measure(
        events=args.consent_events,
        repeats=args.repeats,
        backends=args.backends.split(","),
        active=args.consents,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
