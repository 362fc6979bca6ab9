"""Several push worker processes on one database (PostgreSQL; SQLite too) release and deliver
each page of a push feed exactly once (X.1332 C3.2, R3.4, T4): the feed is claimed before its
page is released, and a second release of the same (feed, period) cannot be written.

The workers are real processes (``tests.broker.delivery.push_worker``: the round ``broker
serve`` runs) posting over mutual TLS to the reference receiver on loopback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import text

from broker.ca.authority import CertificateAuthority
from broker.delivery.signing import load_delivery_key, public_jwk
from broker.kit.clock import FixedClock, SystemClock
from broker.policy.service import activate_shipped_if_none
from broker.recipients.egress import Egress
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.release.feeds import FeedService, FeedSpec
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.runtime.wiring import open_ca, open_consents, open_pipeline, server_identity
from broker.storage.db import Database
from connectors.meters.simulator import Fleet
from consent_ledger import ConsentRequest, notice_hash
from demo.receiver import (
    WebhookReceiver,
    serve_webhook,
    webhook_identity,
    webhook_server_context,
)
from tests.broker.fakes import settings_for
from tests.conftest import empty_postgres
from tests.connectors.mdms.factory import key_rows

ROOT = Path(__file__).resolve().parents[3]
DAY0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
DAYS = 4
FEEDS = 8
WORKERS = 4
NOW = DAY0 + dt.timedelta(days=DAYS, hours=1)
END = DAY0 + dt.timedelta(days=DAYS)
PURPOSE = "personalised_service"


@dataclass
class World:
    rt: Runtime
    receiver: WebhookReceiver
    feed_ids: list[str]
    env: dict[str, str]
    identity: tuple[Path, Path]


def _consent(rt: Runtime, customer: str) -> None:
    request = ConsentRequest(
        customer=customer, recipient="acme", purposes=(PURPOSE,), categories=("consumption",),
        granularity="15min", expires_at=NOW + dt.timedelta(days=90),
        notice_hash=notice_hash(b"the notice shown"), collection_method="oauth_consent_page",
        controller="utility.example", history_days=30, identified=True, explicit=True,
    )  # fmt: skip
    with rt.db.transaction() as session:
        open_consents(rt).give(session, request, "customer")


@pytest.fixture(params=["postgres", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """Eight push feeds of four ended days each, a webhook on loopback, on PostgreSQL (the
    session's test database) or on SQLite (a file every process opens)."""
    postgres = request.param == "postgres"
    url: str | None = request.getfixturevalue("pg_url") if postgres else None
    settings = settings_for(tmp_path / "var", database_url=url)
    prepare_data_dir(settings)
    init_keys(settings)
    if not postgres:
        upgrade_schema(settings).dispose()
    ca = CertificateAuthority.create(settings, SystemClock())
    clock = FixedClock(NOW)
    rt = Runtime.open(settings, clock)
    try:
        activate_shipped_if_none(settings, rt.db.transaction, rt.audit, clock, "test")
        fleet = Fleet.create(FEEDS, 7)
        with rt.db.transaction() as session:
            rt.meters.provision(session, key_rows(fleet.meters), "test", "keys.csv")
        frames = [frame for _meter, frame in fleet.frames(DAY0.date(), DAYS, 96)]
        with rt.db.transaction() as session:
            assert rt.ingest.ingest(session, frames, "dc", "b", "test").outcomes() == {
                "accepted": len(frames)
            }
        identity = server_identity(rt, open_ca(rt), "test")
        jwks = {"keys": [public_jwk(load_delivery_key(rt.settings))]}
        key = ECKey.generate_key("P-256", parameters={"kid": "acme-1"})
        receiver = WebhookReceiver.for_jwks("acme", jwks, key)
        hook_ca, cert, cert_key = webhook_identity(tmp_path / "hook")
        ctx = webhook_server_context(ca.cert_path, cert, cert_key)
        with serve_webhook(receiver, ctx) as port:
            url = f"https://127.0.0.1:{port}/hook"
            with rt.db.transaction() as session:
                egress = Egress(allow_private=True, private_ports=frozenset({port}))
                recipients = Recipients(rt.audit, rt.clock, egress=egress)
                recipients.register(
                    session, Registration("acme", "Acme", Kind.third_party, (PURPOSE,), url), "t"
                )
                recipients.add_key(session, "acme", key.as_dict(private=False), "test")
            feeds = FeedService(rt.db, open_pipeline(rt), clock, rt.hasher)
            feed_ids = []
            for meter in fleet.meters:
                _consent(rt, meter.customer_ref)
                spec = FeedSpec(PURPOSE, ("consumption",), "hourly", "subject",
                                subject=meter.customer_ref, period_from=DAY0, period_to=END,
                                delivery="push")  # fmt: skip
                feed_ids.append(str(feeds.subscribe("acme", spec)["feed_id"]))
            env = {**os.environ, "BROKER_DATA_DIR": str(settings.data_dir),
                   "BROKER_DATABASE_URL": settings.db_url(), "BROKER_PUSH_CA_FILE": str(hook_ca),
                   "BROKER_WEBHOOK_ALLOW_PRIVATE": "true",
                   "BROKER_WEBHOOK_PRIVATE_PORTS": f"[{port}]"}  # fmt: skip
            yield World(rt, receiver, feed_ids, env, identity)
    finally:
        if postgres:
            empty_postgres(rt.db)
        rt.close()


def _run_workers(w: World, go: Path) -> list[dict[str, int]]:
    cert, key = w.identity
    args = [sys.executable, "-m", "tests.broker.delivery.push_worker", NOW.isoformat(),
            str(cert), str(key), str(go), "20"]  # fmt: skip
    procs = [
        subprocess.Popen(args, cwd=ROOT, env=w.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(WORKERS)
    ]
    go.touch()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return reports


def _rows(db: Database, sql: str) -> list[tuple[str, ...]]:
    with db.transaction() as session:
        return [tuple(row) for row in session.execute(text(sql)).all()]


def test_C3_2_n_worker_processes_release_and_deliver_each_feed_day_exactly_once(
    world: World, tmp_path: Path
) -> None:
    """Four worker processes, eight push feeds, four days: 32 pages, each released once (one
    release row, one ``release.made`` entry) and delivered once (one delivery id)."""
    reports = _run_workers(world, tmp_path / "go")
    db, expected = world.rt.db, FEEDS * DAYS
    releases = _rows(db, "SELECT release_id, feed_id FROM release")
    made = _rows(db, "SELECT seq FROM audit_entry WHERE event_type = 'release.made'")
    pages: Counter[tuple[str, str]] = Counter()
    for push in world.receiver.pushed.values():  # one entry per distinct delivery id
        page = json.loads(push.body)["release"]
        pages[(page["feed_id"], page["from"])] += 1
    seen = {
        "pushed_pages": sum(r["pushed_pages"] for r in reports),
        "release_rows": len(releases),
        "release_made_entries": len(made),
        "delivery_ids_at_receiver": len(world.receiver.pushed),
        "pages_received_twice_or_more": sum(1 for n in pages.values() if n > 1),
    }
    assert seen == {
        "pushed_pages": expected,
        "release_rows": expected,
        "release_made_entries": expected,
        "delivery_ids_at_receiver": expected,
        "pages_received_twice_or_more": 0,
    }, reports
    assert len(pages) == expected and {feed for feed, _day in pages} == set(world.feed_ids)
    statuses = Counter(status for (status,) in _rows(db, "SELECT status FROM delivery"))
    assert statuses == {"delivered": expected}
