"""How fast the meter simulator's load model draws a day: 15-minute energy of N households.

The model is seeded per household (``connectors.meters.load.LoadModel``); a warm-up call on a
few households comes first, then ``--repeats`` timed draws of the whole population for one
Monday. Prints one JSON object: the median seconds and households per second, every repeat,
and the target (10 000 households' day in under a second).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from connectors.meters.load import DAY_S, LoadModel

MONDAY_S = 1_741_564_800 // DAY_S * DAY_S  # 2025-03-10 00:00 UTC, a Monday
TARGET_S = 1.0


def measure(households: int, repeats: int, seed: int = 1) -> dict[str, Any]:
    model = LoadModel(seed)
    drawn = model.households(range(households))
    model.energy_wh(drawn[:10], MONDAY_S, 96)  # warm: tables built, code paths loaded
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        wh = model.energy_wh(drawn, MONDAY_S, 96)
        seconds.append(time.perf_counter() - began)
        if wh.shape != (households, 96):
            raise RuntimeError(f"expected {households} x 96 intervals, got {wh.shape}")
    median = statistics.median(seconds)
    return {
        "benchmark": "load_model",
        "households": households,
        "intervals": 96,
        "repeats": repeats,
        "day_s_median": round(median, 4),
        "day_s_all": [round(s, 4) for s in seconds],
        "households_per_s": round(households / median),
        "target_day_s_for_10k": TARGET_S,
        "target_met": households != 10_000 or median < TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.households, args.repeats)))


if __name__ == "__main__":
    main()
