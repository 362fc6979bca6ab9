"""Export and offline verification of an audit log of ``--entries`` entries.

Target: export and verify of 100 k entries <= 10 s. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import database, fill, new_log
from broker.audit.export import ExportFilters, export_bundle
from broker.audit.verify import verify_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="sqlite")
    args = parser.parse_args()
    log = new_log()
    exports, verifies, size = [], [], 0
    with database(args.backend) as db, tempfile.TemporaryDirectory() as tmp:
        fill(db, log, args.entries, 20_000)
        out = Path(tmp) / "audit-export.jsonl"
        for _ in range(args.repeats):
            start = time.perf_counter()
            with db.transaction() as session:
                export_bundle(session, log, out, ExportFilters())
            exports.append(time.perf_counter() - start)
            start = time.perf_counter()
            report = verify_bundle(out, log.signer.verifier_key())
            verifies.append(time.perf_counter() - start)
            assert report.entries == args.entries
            size = out.stat().st_size
    export_s, verify_s = statistics.median(exports), statistics.median(verifies)
    print(
        json.dumps(
            {
                "benchmark": "audit_export",
                "backend": args.backend,
                "entries": args.entries,
                "repeats": args.repeats,
                "file_mb": round(size / 1e6, 1),
                "export_s_median": round(export_s, 2),
                "verify_s_median": round(verify_s, 2),
                "export_plus_verify_s": round(export_s + verify_s, 2),
                "target_s": 10.0,
            }
        )
    )


if __name__ == "__main__":
    main()
