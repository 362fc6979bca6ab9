"""Shared set-up for the benchmarks: fresh databases on SQLite and PostgreSQL, an audit log."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.events import AuditEvent
from broker.audit.log import AuditLog
from broker.audit.note import NoteSigner
from broker.kit.clock import FixedClock
from broker.schema import migrate
from broker.storage.db import Database

PG_ADMIN = os.environ.get("BROKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ORIGIN = "bench.example/audit"


def new_log() -> AuditLog:
    clock = FixedClock(datetime(2026, 11, 24, tzinfo=UTC))
    return AuditLog(ORIGIN, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), clock)


def events(n: int, offset: int = 0) -> list[AuditEvent]:
    return [
        AuditEvent(
            "ingest.frame_rejected",
            "concentrator:dc-01",
            "hs1:" + "ab" * 32,
            {"reason": "replay", "n": offset + i},
        )
        for i in range(n)
    ]


@contextmanager
def database(backend: str) -> Iterator[Database]:
    """A fresh, migrated database of ``backend`` (sqlite or postgres), removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database.from_url(f"sqlite:///{Path(tmp) / 'bench.db'}")
            migrate.upgrade(db.engine)
            yield db
            db.dispose()
        return
    name = f"broker_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    db = Database.from_url(f"{base}/{name}")
    try:
        migrate.upgrade(db.engine)
        yield db
    finally:
        db.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(db: Database, log: AuditLog, total: int, batch: int) -> None:
    for start in range(0, total, batch):
        with db.transaction() as session:
            log.record(session, events(min(batch, total - start), start))
