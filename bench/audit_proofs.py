"""Checkpoint and inclusion-proof latency on a large stored log.

Targets: a checkpoint over 1 M entries <= 1 s; an inclusion proof at 1 M entries
<= 1 ms. Fills a fresh database with ``--entries`` (group commits), then times a fresh
checkpoint (root computation and signing) and ``--proofs`` inclusion proofs at random leaves,
each on its own read transaction. Prints one JSON object with medians.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from sqlalchemy import text

from bench.common import database, fill, new_log
from broker.audit.merkle import leaf_hash, verify_inclusion


def _measure(backend: str, entries: int, proofs: int) -> dict[str, float]:
    log = new_log()
    with database(backend) as db:
        start = time.perf_counter()
        fill(db, log, entries, 20_000)
        fill_s = time.perf_counter() - start
        checkpoint_s = []
        for _ in range(3):
            with db.transaction() as session:
                session.execute(text("DELETE FROM audit_checkpoint"))
            start = time.perf_counter()
            with db.transaction() as session:
                cp = log.checkpoint(session)
            checkpoint_s.append(time.perf_counter() - start)
        rng = random.Random(7)
        proof_ms = []
        with db.transaction() as session:
            for seq in (rng.randrange(entries) for _ in range(proofs)):
                start = time.perf_counter()
                proof = log.inclusion_proof(session, seq, cp.size)
                proof_ms.append((time.perf_counter() - start) * 1000)
                body = session.execute(
                    text(f"SELECT body FROM audit_entry WHERE seq = {seq}")
                ).scalar_one()
                verify_inclusion(seq, cp.size, leaf_hash(body.encode()), proof, cp.root)
    return {
        f"{backend}_fill_s": round(fill_s, 2),
        f"{backend}_checkpoint_s_median": round(statistics.median(checkpoint_s), 4),
        f"{backend}_inclusion_proof_ms_median": round(statistics.median(proof_ms), 3),
        f"{backend}_inclusion_proof_ms_p99": round(sorted(proof_ms)[int(len(proof_ms) * 0.99)], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    result: dict[str, object] = {
        "benchmark": "audit_proofs",
        "entries": args.entries,
        "proofs": args.proofs,
        "target_checkpoint_s": 1.0,
        "target_inclusion_proof_ms": 1.0,
    }
    for backend in args.backends.split(","):
        result.update(_measure(backend, args.entries, args.proofs))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
