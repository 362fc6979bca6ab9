"""Envelope encryption throughput: seal and open of 1 KiB records under a cached data key.

Target: >= 200 k ops/s each. Prints one JSON object; figures are medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from broker.kit.envelope import KeyRing, new_data_key


def _rate(fn: object, n: int) -> float:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    key = new_data_key()
    ring = KeyRing(lambda _ref: key)
    record, context = os.urandom(args.size), b"subject=hs1:abc|meter=MTR0001|day=2026-11-24"
    sealed = ring.seal("dk_bench", record, context)
    seal = [
        _rate(lambda: ring.seal("dk_bench", record, context), args.ops) for _ in range(args.repeats)
    ]
    opened = [_rate(lambda: ring.open(sealed, context), args.ops) for _ in range(args.repeats)]
    print(
        json.dumps(
            {
                "benchmark": "envelope",
                "record_bytes": args.size,
                "ops_per_repeat": args.ops,
                "repeats": args.repeats,
                "seal_ops_per_s_median": round(statistics.median(seal)),
                "open_ops_per_s_median": round(statistics.median(opened)),
                "target_ops_per_s": 200_000,
            }
        )
    )


if __name__ == "__main__":
    main()
