"""One push worker process for ``test_push_once``: the worker round ``broker serve`` runs
(``PushService.round`` with the HTTPS poster), on the data directory and database named by
``BROKER_DATA_DIR`` and ``BROKER_DATABASE_URL``, on a fixed clock.

    python -m tests.broker.delivery.push_worker <clock ISO> <cert> <key> <go file> <rounds>

It waits for ``<go file>`` to exist (so every worker starts its first round together), then
runs rounds until one round pushes and delivers nothing (at most ``<rounds>``), and prints the
totals as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from broker.delivery.service import http_poster
from broker.delivery.settings import PushSettings
from broker.kit.clock import FixedClock
from broker.recipients.egress import Egress
from broker.runtime.core import Runtime
from broker.runtime.wiring import open_feeds, open_push
from broker.settings import load_settings

START_DEADLINE_S = 60.0


def main(argv: list[str]) -> int:
    at, cert, key, go, rounds = argv
    rt = Runtime.open(load_settings(), FixedClock(datetime.fromisoformat(at)))
    push = PushSettings(timeout_s=10.0, max_attempts=8, backoff_base_s=0.01, backoff_cap_s=0.01)
    feeds = open_feeds(rt)
    service = open_push(rt, feeds, push)
    poster = http_poster(push, (Path(cert), Path(key)), Egress.of(rt.settings))
    deadline = time.monotonic() + START_DEADLINE_S
    while not Path(go).exists():  # a start line for all workers, polled with a deadline
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no start signal"}))
            return 2
        time.sleep(0.01)
    totals = {"rounds": 0, "pushed_pages": 0, "delivered": 0, "retrying": 0, "dead": 0}
    try:
        for _ in range(int(rounds)):
            report = service.round(poster)
            totals["rounds"] += 1
            totals["pushed_pages"] += report.pushed_pages
            for name, count in report.deliveries.items():
                totals[name] = totals.get(name, 0) + count
            if report.pushed_pages == 0 and not any(report.deliveries.values()):
                break
    finally:
        poster.close()
        rt.close()
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
