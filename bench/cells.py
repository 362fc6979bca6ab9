"""What canonical cells cost in release time: an EMS aggregate release that computes and records
its substation-days, against the same release served from the recorded cells, against the
per-request aggregate it replaced.

Set-up (not timed): a fresh data directory and database, the shipped policy, N simulated meters
(150 a feeder, three feeders a substation) with ``--days`` days of 15-minute profiles ingested
as DLMS frames through the MDMS, and an EMS recipient.

For every day, in process (``ReleasePipeline.run``, decision, audit entry and release row
included): the first release of the day's feeder aggregates (``first``: it reads every household
of the substations, computes the cells at every granularity and records them), then the same
release again by a second EMS (``served``: recorded cells only). ``per_request`` times the old
path's computation on the same readings: ``deidentify.aggregate.aggregate`` at one granularity on
the requested feeders, and ``compute`` the canonical computation alone
(``deidentify.canonical.canonical_cells``) on the same readings.

Prints one JSON object with medians (ms) over the days and the ratios of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from bench.common import database
from bench.release import _settings
from broker.kit.clock import SystemClock
from broker.policy.decision import Decision, Facts, ReleaseRequest
from broker.policy.service import activate_shipped_if_none
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.release.service import ReleaseOptions, ReleasePipeline
from broker.runtime.core import Runtime, init_keys, prepare_data_dir
from broker.runtime.wiring import open_pipeline
from connectors.meters.simulator import Fleet
from deidentify.aggregate import Rules, aggregate
from deidentify.canonical import canonical_cells
from tests.connectors.mdms.factory import key_rows

EMS = ("ems-a", "ems-b")


def _fill(rt: Runtime, meters: int, first: datetime, days: int) -> None:
    fleet = Fleet.create(meters, 1)
    with rt.db.transaction() as session:
        rt.meters.provision(session, key_rows(fleet.meters), "bench", "keys.csv")
    frames = [frame for _meter, frame in fleet.frames(first.date(), days, 96)]
    with rt.db.transaction() as session:
        result = rt.ingest.ingest(session, frames, "dc-bench", "b", "bench")
    if result.count("accepted") != len(frames):
        raise RuntimeError(f"ingest did not accept every frame: {result.outcomes()}")


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = "postgres" if args.backend == "postgresql" else args.backend
    feeders = tuple(f"F-{i + 1:03d}" for i in range(-(-args.meters // 150)))
    with database(backend) as db, tempfile.TemporaryDirectory() as tmp:
        settings, _oauth, _changed = _settings(Path(tmp) / "var", db.engine.url.render_as_string(
            hide_password=False))  # fmt: skip
        prepare_data_dir(settings)
        init_keys(settings)
        clock = SystemClock()
        rt = Runtime.open(settings, clock)
        activate_shipped_if_none(settings, rt.db.transaction, rt.audit, clock, "bench")
        today = clock.now().date()
        first = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=args.days)
        _fill(rt, args.meters, first, args.days)
        with rt.db.transaction() as session:
            for name in EMS:
                reg = Registration(name, name, Kind.ems, ("grid_operations",))
                Recipients(rt.audit, rt.clock).register(session, reg, "bench")
        pipeline = open_pipeline(rt)
        times: dict[str, list[float]] = {"first": [], "served": [], "per_request": [],
                                         "compute": []}  # fmt: skip
        rules = Rules.of(15, 0.15, 100, True)
        for d in range(args.days):
            start = first + timedelta(days=d)
            for name, label in zip(EMS, ("first", "served"), strict=True):
                with rt.db.transaction() as session:
                    request = pipeline.request_for(session, name, "grid_operations",
                                                   ("consumption",), "15min", start,
                                                   start + timedelta(days=1))  # fmt: skip
                began = time.perf_counter()
                pipeline.run(rt.db, request, ReleaseOptions(groups=feeders))
                times[label].append(time.perf_counter() - began)
            with rt.db.transaction() as session:
                allowed = _allowed(pipeline, request)
                parents = sorted(set(pipeline.repository.parents_of(session, feeders).values()))
                readings, households = pipeline.repository.units(
                    session, allowed, parents, start, start + timedelta(days=1)
                )
            began = time.perf_counter()
            aggregate(readings, households, interval=900)
            times["per_request"].append(time.perf_counter() - began)
            began = time.perf_counter()
            canonical_cells(readings, households, rules)
            times["compute"].append(time.perf_counter() - began)
        rt.close()
    medians = {k: _ms(v) for k, v in times.items()}
    return {
        "meters": args.meters,
        "substations": -(-args.meters // 450),
        "days": args.days,
        "backend": args.backend,
        "median_ms": medians,
        "ratio_first_over_served": round(medians["first"] / medians["served"], 2),
        "ratio_compute_over_per_request": round(medians["compute"] / medians["per_request"], 2),
    }


def _allowed(pipeline: ReleasePipeline, request: ReleaseRequest) -> Decision:
    """An allowing decision for the in-process read (the repository takes one)."""
    return pipeline.decisions.decide(Facts(request, (), pipeline.clock.now()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=1350, help="meters (450 a substation)")
    parser.add_argument("--days", type=int, default=5, help="days, each a sample")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        progress.add_task("canonical cells: filling and releasing", total=None)
        body = run(args)
    print(json.dumps(body, indent=2))


if __name__ == "__main__":
    main()
