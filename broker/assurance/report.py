"""``broker privacy report``: what each tier protects and what it costs in accuracy.

On the demo fleet grown from its own load model (``broker.assurance.population``):

- **Utility**: the error of released group sums against the truth, per released quarter-hour,
  as MAPE (mean absolute percentage error over the cells released), by group size N (100, 1 000,
  10 000 households) and ε (0.1, 0.5, 1, 2) for the ``dp`` tier; the ``aggregated`` tier is exact
  where released and withholds cells (its cost is the share of cells withheld).
- **Privacy**: the k the generalised tier reaches on the quasi-identifiers (postcode area,
  tariff, PV, EV) and the rows it suppressed; a linkage attack per tier — nearest neighbour
  between two weeks on the distribution of each record's readings, pseudonyms re-keyed in
  between. Pseudonymised data links well (it stays personal data, and the report says so);
  the generalised tier at most 1/k; aggregated and dp tiers release no household record.
- **Attacks** by recipients who pool what they receive, each run against the per-request
  aggregates released before canonical cells (``deidentify.aggregate.aggregate``,
  ``deidentify.dp.dp_aggregate``: "before") and against canonical cells as the broker serves
  them (``deidentify.canonical``, ``deidentify.canonical_dp``, ``broker.release.cells``: "now").
  They run on the fleet's first substation with its feeders cut to 110, 150 and 80 households,
  so that one feeder fails the N rule (100 residential households) and quiet night quarter-hours
  are dominated by one household: where the old per-request rules merged and withheld cells.
  ``attacks`` says how.

``run`` measures (``broker.assurance.measures``), attacks (``broker.assurance.attacks``) and
writes ``privacy-report.json`` and ``error-by-group-size.png`` into the output directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.assurance.attacks import attacks
from broker.assurance.measures import EPSILONS, SIZES, privacy, utility
from broker.assurance.population import population

REPORT = "privacy-report.json"
PLOT = "error-by-group-size.png"


@dataclass
class Report:
    households: int
    seed: int
    utility: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "households": self.households,
            "seed": self.seed,
            "utility": self.utility,
            "privacy": self.privacy,
            "attacks": self.attacks,
        }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    table = report["utility"]["dp_mape_percent"]
    sizes = sorted(int(n) for n in table)
    for epsilon in sorted({float(e) for row in table.values() for e in row}):
        ax.plot(
            sizes,
            [table[str(n)][str(epsilon)] for n in sizes],
            marker="o",
            label=f"ε = {epsilon:g}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("households per group (N)")
    ax.set_ylabel("MAPE of quarter-hour sums (%)")
    ax.set_title("dp tier: error of group sums by group size and ε")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(
    out: Path, households: int, seed: int, linkage_households: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    pop = population(households, seed)
    sizes = tuple(n for n in SIZES if n <= households)
    report = Report(households, seed)
    report.utility = utility(pop, sizes, EPSILONS, progress)
    report.privacy = privacy(pop, min(linkage_households, households), progress)
    report.attacks = attacks(seed, report.privacy, progress)
    body = report.as_json()
    (out / REPORT).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    plot(body, out / PLOT)
    return body
