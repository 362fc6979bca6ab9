"""MDMS ingest throughput end to end, against the raw limit of the same bytes and rows.

Targets, PostgreSQL on this 2-core machine: >= 300 k readings/s end to end, a 1 M-meter
day (96 M readings) in <= 10 minutes, ``ratio`` >= 0.25, peak memory bounded.

For each batch of ``--batch`` meters' day-frames (simulated, generated outside the timed part)
it times the pipeline behind ``POST /mdms/v1/frames`` and ``broker mdms ingest``: parse, verify
and decrypt each frame, decode, VEE, seal one block per meter and day under the customer's data
key, write blocks, meter state, tallies and the batch's audit entry in one transaction. In the
same run it times the raw limit of that batch: AES-GCM decryption of the same frames plus a bulk
insert (binary COPY / executemany) of the same rows the pipeline wrote into a scratch table of
the same shape. ``ratio`` = end to end / raw limit. Meters are processed a chunk at a time over
all ``--days`` (never the whole fleet in memory); provisioning is set-up and not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import ORIGIN, database
from broker.audit.log import AuditLog
from broker.audit.note import NoteSigner
from broker.keys.provider import FileKeyProvider
from broker.keys.service import DataKeys
from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.settings import Mode, Settings
from broker.storage.db import Database
from broker.storage.raw import Raw
from connectors.dlms import frames as dlms
from connectors.mdms.ingest import IngestPipeline
from connectors.mdms.keyfile import MeterKeyRow
from connectors.mdms.registry import MeterRegistry
from connectors.meters.simulator import Fleet, SimulatedMeter

START = datetime(2026, 11, 2, tzinfo=UTC)
_COLUMNS = ("meter_id", "day", "readings", "estimated", "flags", "sealed", "updated_us")
_TYPES = ("text", "int4", "int2", "int2", "int2", "bytea", "int8")


def _scratch(db: Database) -> None:
    blob = "bytea" if db.engine.dialect.name == "postgresql" else "BLOB"
    with db.transaction() as session:
        Raw(session).execute(
            "CREATE TABLE bench_raw_day (meter_id VARCHAR(16) NOT NULL, day INTEGER NOT NULL, "
            "readings SMALLINT NOT NULL, estimated SMALLINT NOT NULL, flags SMALLINT NOT NULL, "
            f"sealed {blob} NOT NULL, updated_us BIGINT NOT NULL, PRIMARY KEY (meter_id, day))"
        )


def _rows(meter: SimulatedMeter) -> MeterKeyRow:
    k = meter.keys
    title = meter.system_title.hex().upper()
    return MeterKeyRow(
        0,
        title,
        k.encryption_key,
        k.authentication_key,
        k.master_key,
        meter.customer_ref,
        meter.feeder,
        meter.postcode,
    )


class Bench:
    def __init__(self, db: Database, tmp: Path, days: int) -> None:
        self.db = db
        settings = Settings(mode=Mode.development, data_dir=tmp)
        clock = FixedClock(START + timedelta(days=days, hours=1))
        provider = FileKeyProvider.create(settings)
        audit = AuditLog(ORIGIN, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), clock)
        hasher = SubjectHasher(secrets.token_bytes(32))
        data_keys = DataKeys(provider, audit, clock, hasher)
        self.registry = MeterRegistry(provider, data_keys, audit, clock, hasher)
        self.pipeline = IngestPipeline(self.registry, data_keys, audit, clock, hasher)
        self.pipeline_s = self.raw_s = self.provision_s = 0.0
        self.frames = self.readings = self.accepted = 0

    def provision(self, fleet: Fleet) -> None:
        start = time.perf_counter()
        with self.db.transaction() as session:
            self.registry.provision(session, [_rows(m) for m in fleet.meters], "bench", "bench")
        self.provision_s += time.perf_counter() - start

    def batch(self, fleet: Fleet, day: int, push_intervals: int, batch_no: int) -> None:
        pairs = list(fleet.frames(START + timedelta(days=day), 1, push_intervals))
        frames = [f for _m, f in pairs]
        start = time.perf_counter()
        with self.db.transaction() as session:
            result = self.pipeline.ingest(session, frames, "bench", f"b{batch_no}", "bench")
        self.pipeline_s += time.perf_counter() - start
        self.frames += len(frames)
        self.readings += sum(a.readings for a in result.answers if a.status == "accepted")
        self.accepted += result.count("accepted")
        self.raw_s += self._raw(pairs, [m.system_title.hex().upper() for m in fleet.meters], day)

    def _raw(self, pairs: list[tuple[SimulatedMeter, bytes]], ids: list[str], day: int) -> float:
        """Decrypt the same frames, then bulk-insert the same rows: the floor of the work."""
        day_no = int((START + timedelta(days=day)).timestamp()) // 86_400
        with self.db.transaction() as session:
            rows = list(
                Raw(session).query_in(
                    f"SELECT {', '.join(_COLUMNS)} FROM reading_day "
                    f"WHERE day = {day_no:d} AND meter_id IN {{in}}",
                    ids,
                )
            )
        keys = [(m.keys.encryption_key, m.keys.authentication_key) for m, _f in pairs]
        start = time.perf_counter()
        for (ek, ak), (_m, frame) in zip(keys, pairs, strict=True):
            dlms.open_ciphered(dlms.parse_ciphered(frame), ek, ak)
        with self.db.transaction() as session:
            Raw(session).copy_in("bench_raw_day", _COLUMNS, _TYPES, rows)
        return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, object]:
    backend = "postgres" if args.backend == "postgresql" else args.backend
    with database(backend) as db, tempfile.TemporaryDirectory() as tmp:
        _scratch(db)
        bench = Bench(db, Path(tmp), args.days)
        wall = time.perf_counter()
        number = 0
        for fleet in Fleet.chunks(args.meters, args.seed, chunk=args.batch):
            bench.provision(fleet)
            for day in range(args.days):
                bench.batch(fleet, day, args.push_intervals, number)
                number += 1
            if args.progress:
                done = number // args.days * args.batch
                print(f"{min(done, args.meters)} meters", flush=True, end="\r")
        wall = time.perf_counter() - wall
    readings_per_s = bench.readings / bench.pipeline_s
    raw = bench.readings / bench.raw_s
    return {
        "benchmark": "ingest",
        "backend": args.backend,
        "meters": args.meters,
        "days": args.days,
        "batch_frames": args.batch,
        "push_intervals": args.push_intervals,
        "frames": bench.frames,
        "frames_accepted": bench.accepted,
        "readings": bench.readings,
        "pipeline_s": round(bench.pipeline_s, 2),
        "readings_per_s": round(readings_per_s),
        "frames_per_s": round(bench.frames / bench.pipeline_s),
        "raw_limit_readings_per_s": round(raw),
        "ratio": round(readings_per_s / raw, 3),
        "provision_s": round(bench.provision_s, 2),
        "wall_s_with_generation": round(wall, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "targets": {"readings_per_s": 300_000, "ratio": 0.25, "day_of_1M_meters_s": 600},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--batch", type=int, default=2_000, help="meters (frames) per batch")
    parser.add_argument("--push-intervals", type=int, default=96, help="intervals per frame")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", action="store_true", help="print progress on stderr")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
