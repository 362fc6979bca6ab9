"""Consent ledger: event appends (with receipts signed) on SQLite and PostgreSQL, and the
covering query on a ledger of 10 k active consents.

Targets: appends >= 20 k events/s; covering() a few µs (the policy decision, p50 <=
20 µs, includes it). Prints one JSON object: per backend the median of ``--repeats`` runs of
``--events`` given events appended through ``ConsentService.append_many`` in groups of
``--batch`` (each event hashed, stored and entered in the audit log, then its receipt signed
after the commit), the same without receipts (the part that holds the ledger's lock; signing
runs outside it and scales with processes), and the covering p50/p99 in µs. ``measure()``
returns the same figures for ``bench/policy.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import database, new_log
from broker.consent.service import ConsentService
from broker.customers.models import Customer
from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.recipients.models import Recipient
from broker.storage.db import Database
from consent_ledger import (
    DEFAULT_VOCABULARY,
    ConsentRequest,
    Draft,
    Give,
    LedgerState,
    ReceiptSigner,
    notice_hash,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PURPOSES = ("personalised_service", "demand_response", "energy_efficiency_research")
RECIPIENTS = tuple(f"recipient-{i:02d}" for i in range(20))
NOTICE = notice_hash(b"bench notice")


def _request(i: int) -> ConsentRequest:
    return ConsentRequest(
        customer=f"C-{i:08d}",
        recipient=RECIPIENTS[i % len(RECIPIENTS)],
        purposes=(PURPOSES[i % len(PURPOSES)],),
        categories=("consumption",),
        granularity=("hourly", "daily", "monthly")[i % 3],
        expires_at=T0 + timedelta(days=30 + i % 300),
        notice_hash=NOTICE,
        collection_method="oauth_consent_page",
        controller="utility.example",
        history_days=i % 90,
        explicit=True,
    )


def _service() -> ConsentService:
    clock = FixedClock(T0)
    signer = ReceiptSigner(Ed25519PrivateKey.generate())
    return ConsentService(new_log(), clock, SubjectHasher(b"b" * 32), signer)


def _enrol(db: Database, events: int) -> None:
    """The customers and recipients the requests name (a consent must name known parties)."""
    with db.transaction() as session:
        session.add_all(
            Customer(customer_ref=f"C-{i:08d}", subject_hash=f"h{i}", created_us=0)
            for i in range(events)
        )
        session.add_all(
            Recipient(recipient_id=name, display_name=name, kind="third_party", purposes="[]",
                      status="active", created_us=0, updated_us=0)
            for name in RECIPIENTS
        )  # fmt: skip


def append_rate(backend: str, events: int, batch: int, receipts: bool) -> float:
    """Events a second appended in groups of ``batch`` on a fresh database of ``backend``;
    with ``receipts``, each group's receipts are signed after its commit, as a server does
    (outside the ledger's lock, but in this one process)."""
    groups = [
        [Give(_request(i)) for i in range(start, min(start + batch, events))]
        for start in range(0, events, batch)
    ]
    service = _service()
    with database(backend) as db:
        _enrol(db, events)
        # The set-up (the 20 k requests built above, the modules, the engine) is moved out of
        # the collector's reach (gc.freeze, which a server can call after start-up; `broker
        # serve` does not yet): otherwise each full collection the ledger's growth triggers
        # walks the bench's own input too.
        gc.collect()
        gc.freeze()
        try:
            start = time.perf_counter()
            for group in groups:
                with db.transaction() as session:
                    appended = service.append_many(session, group, "bench")
                if receipts:
                    for one in appended:
                        assert one.receipt
            return events / (time.perf_counter() - start)
        finally:
            gc.unfreeze()


def ledger_with(active: int) -> LedgerState:
    """A state with ``active`` consents (20 recipients, customers with one consent each)."""
    state = LedgerState()
    draft = Draft(state, DEFAULT_VOCABULARY, 365)
    for i in range(active):
        draft.give(_request(i), T0, "bench")
    for event in draft.events:
        state.apply(event)
    return state


def covering_latency_us(state: LedgerState, active: int, queries: int) -> dict[str, float]:
    """p50/p99 of single covering() calls, half of them covered and half denied."""
    at, period = T0 + timedelta(days=1), (T0 - timedelta(days=1), T0 + timedelta(hours=12))
    samples = []
    clock = time.perf_counter_ns
    for q in range(queries):
        i = (q * 7919) % active
        purpose = PURPOSES[i % len(PURPOSES)] if q % 2 else "marketing"
        args = (f"C-{i:08d}", RECIPIENTS[i % len(RECIPIENTS)], purpose, "consumption", "monthly")
        start = clock()
        state.covering(*args, *period, at)
        samples.append(clock() - start)
    samples.sort()
    return {
        "p50": round(samples[len(samples) // 2] / 1000, 2),
        "p99": round(samples[len(samples) * 99 // 100] / 1000, 2),
    }


def measure(
    events: int = 20_000,
    batch: int = 1000,
    repeats: int = 3,
    backends: Sequence[str] = ("sqlite", "postgres"),
    active: int = 10_000,
    queries: int = 100_000,
) -> dict[str, Any]:
    """The consent figures as one dict (``bench/policy.py`` includes them)."""
    result: dict[str, Any] = {
        "events": events,
        "batch": batch,
        "repeats": repeats,
        "target_events_per_s": 20_000,
    }
    for backend in backends:
        for receipts, label in ((True, "with_receipts"), (False, "without_receipts")):
            rates = [append_rate(backend, events, batch, receipts) for _ in range(repeats)]
            result[f"{backend}_{label}_events_per_s_median"] = round(statistics.median(rates))
            result[f"{backend}_{label}_events_per_s_all"] = [round(r) for r in rates]
    state = ledger_with(active)
    latency = covering_latency_us(state, active, queries)
    result["active_consents"] = state.active_count()
    result["covering_p50_us"], result["covering_p99_us"] = latency["p50"], latency["p99"]
    result["receipt_sign_us"] = _sign_cost_us()
    return result


def _sign_cost_us(n: int = 2000) -> float:
    """One receipt's signing cost alone (Ed25519 dominates), to read the rates against."""
    state = LedgerState()
    event = Draft(state, DEFAULT_VOCABULARY, 365).give(_request(1), T0, "bench")
    assert event.terms is not None
    signer = ReceiptSigner(Ed25519PrivateKey.generate())
    start = time.perf_counter()
    for _ in range(n):
        signer.sign(event, event.terms)
    return round((time.perf_counter() - start) / n * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="events appended per run")
    parser.add_argument("--batch", type=int, default=1000, help="events per append_many group")
    parser.add_argument("--repeats", type=int, default=3, help="runs per backend (median kept)")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--active", type=int, default=10_000, help="active consents for covering")
    parser.add_argument("--queries", type=int, default=100_000, help="covering() calls timed")
    args = parser.parse_args()
    figures = measure(
        args.events, args.batch, args.repeats, args.backends.split(","), args.active, args.queries
    )
    print(json.dumps({"benchmark": "consent", **figures}))


if __name__ == "__main__":
    main()
