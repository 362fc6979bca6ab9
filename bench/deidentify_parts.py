"""Pseudonym and k-anonymity figures for the de-identification benchmark.

Targets: pseudonyms >= 0.5 M ids/s; the k-anonymity check over 1 M rows <= 2 s.
``bench/deidentify.py`` imports these functions; run alone, this prints one JSON object:

- ``pseudonyms``: ``pseudonymise`` on a frame of ``--ids`` distinct meter ids in random order
  (the worst case: every row a new id), ids per second; and on a readings-shaped frame of as
  many rows holding 96 intervals per meter, rows per second;
- ``kanon``: ``k_anonymity`` on ``--rows`` households with the load model's tariff, PV and EV
  and one of the 121 UK postcode areas, the area categorical as ``coarsen_location`` makes it
  and as plain text; ``enforce_k_anonymity`` (k = 15) on the same frame.

Each figure is the median of ``--repeats`` runs (all runs in ``*_all``); inputs are built
outside the timed part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from connectors.meters.households import TARIFFS, draw_households
from deidentify.generalise import enforce_k_anonymity, k_anonymity
from deidentify.pseudonym import PseudonymKey, pseudonymise

KEY = PseudonymKey("bench-recipient", bytes(range(32)), 1)
INTERVALS_PER_DAY = 96
AREAS = 121  # UK postcode areas


def _seconds(run: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _meter_ids(n: int, seed: int = 1) -> pd.Series[str]:
    """``n`` distinct system-title-like ids, shuffled (strings made in row order, as a reader
    of a file or a database would make them)."""
    numbers = np.random.default_rng(seed).permutation(n).tolist()
    return pd.Series([f"58534D{i + 1:010X}" for i in numbers])


def pseudonym_rate(n: int = 1_000_000, repeats: int = 3) -> dict[str, Any]:
    """Pseudonyms per second: ``n`` distinct ids, and ``n`` readings rows (96 per meter)."""
    distinct = pd.DataFrame({"meter_id": _meter_ids(n)})
    meters = _meter_ids(max(1, n // INTERVALS_PER_DAY))
    rows = pd.DataFrame({"meter_id": np.repeat(meters.to_numpy(dtype=object), INTERVALS_PER_DAY)})
    rows["meter_id"] = rows["meter_id"].astype("str")
    ids_s = _seconds(lambda: pseudonymise(distinct, key=KEY), repeats)
    rows_s = _seconds(lambda: pseudonymise(rows, key=KEY), repeats)
    return {
        "ids": n,
        "ids_per_s_median": round(n / statistics.median(ids_s)),
        "ids_per_s_all": [round(n / s) for s in ids_s],
        "readings_rows": len(rows),
        "readings_meters": len(meters),
        "readings_rows_per_s_median": round(len(rows) / statistics.median(rows_s)),
        "target_ids_per_s": 500_000,
    }


def _households(rows: int, seed: int = 5) -> pd.DataFrame:
    drawn = draw_households(seed, range(rows))
    areas = np.array([f"{a}{b}" for a in "ABCDEFGHKLMNPRSTW" for b in "ABDEHLMNRSTWY"])[:AREAS]
    area = areas[np.random.default_rng(seed).integers(0, AREAS, rows)]
    return pd.DataFrame(
        {
            "postcode_area": pd.Categorical(area),
            "tariff": pd.Series(np.array(TARIFFS, dtype=object)[drawn.tariff], dtype="str"),
            "has_pv": drawn.has_pv,
            "has_ev": drawn.has_ev,
        }
    )


def kanon_check_seconds(rows: int = 1_000_000, repeats: int = 3) -> dict[str, Any]:
    """Seconds for the k-anonymity check (and its enforcement) over ``rows`` households."""
    categorical = _households(rows)
    text = categorical.astype({"postcode_area": "str"})
    check = _seconds(lambda: k_anonymity(categorical), repeats)
    check_text = _seconds(lambda: k_anonymity(text), repeats)
    enforce = _seconds(lambda: enforce_k_anonymity(categorical), repeats)
    _, report = enforce_k_anonymity(categorical)
    return {
        "rows": rows,
        "check_s_median": round(statistics.median(check), 3),
        "check_s_all": [round(s, 3) for s in check],
        "check_text_area_s_median": round(statistics.median(check_text), 3),
        "enforce_k15_s_median": round(statistics.median(enforce), 3),
        "enforce_k15_steps": [list(step) for step in report.steps],
        "enforce_k15_suppressed": report.suppressed,
        "smallest_class_before": k_anonymity(categorical).smallest_class,
        "target_check_s": 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = {
        "benchmark": "deidentify_parts",
        "repeats": args.repeats,
        "pseudonyms": pseudonym_rate(args.ids, args.repeats),
        "kanon": kanon_check_seconds(args.rows, args.repeats),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
