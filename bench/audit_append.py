"""Audit append throughput with group commit, on SQLite and on PostgreSQL.

Target: >= 100 k entries/s on each. Prints one JSON object: per backend the median of
``--repeats`` runs of ``--entries`` events in transactions of ``--batch`` events each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.common import database, events, new_log


def _run(backend: str, total: int, batch: int) -> float:
    log = new_log()
    prepared = [events(min(batch, total - s), s) for s in range(0, total, batch)]
    with database(backend) as db:
        start = time.perf_counter()
        for group in prepared:
            with db.transaction() as session:
                log.record(session, group)
        return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    result: dict[str, object] = {
        "benchmark": "audit_append",
        "entries": args.entries,
        "batch": args.batch,
        "repeats": args.repeats,
        "target_entries_per_s": 100_000,
    }
    for backend in args.backends.split(","):
        rates = [_run(backend, args.entries, args.batch) for _ in range(args.repeats)]
        result[f"{backend}_entries_per_s_median"] = round(statistics.median(rates))
        result[f"{backend}_entries_per_s_all"] = [round(r) for r in rates]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
