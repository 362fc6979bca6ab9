"""De-identification: the three speed targets in one JSON object.

Targets: one day of 1 M meters x 96 intervals aggregated to 10 k groups with DP in <= 5 s in
memory (``dp``); pseudonyms >= 0.5 M ids/s (``pseudonyms``); the k-anonymity check over 1 M
rows <= 2 s (``kanon``). The parts live in ``bench/deidentify_dp.py`` and
``bench/deidentify_parts.py`` (each also runs alone); figures are medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.deidentify_dp import dp_aggregate_seconds
from bench.deidentify_parts import kanon_check_seconds, pseudonym_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=1_000_000, help="meters in the dp day")
    parser.add_argument("--groups", type=int, default=10_000, help="groups of the dp release")
    parser.add_argument("--ids", type=int, default=1_000_000, help="distinct ids pseudonymised")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the k check")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "deidentify"}
    result["dp"] = dp_aggregate_seconds(args.meters, args.groups, args.repeats)
    result["pseudonyms"] = pseudonym_rate(args.ids, args.repeats)
    result["kanon"] = kanon_check_seconds(args.rows, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
