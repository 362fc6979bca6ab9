"""An MDMS over the ``database`` fixture (SQLite and PostgreSQL): registry, pipeline, audit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from broker.audit.log import AuditLog
from broker.audit.note import NoteSigner
from broker.keys.provider import FileKeyProvider
from broker.keys.service import DataKeys
from broker.kit.clock import FixedClock, to_us
from broker.kit.ids import SubjectHasher
from broker.storage.db import Database
from connectors.mdms.answers import BatchResult
from connectors.mdms.ingest import IngestPipeline, IngestSettings
from connectors.mdms.keyfile import MeterKeyRow
from connectors.mdms.registry import MeterRegistry
from tests.broker.fakes import settings_for
from tests.connectors.mdms.factory import DAY0, TestMeter

ORIGIN = "test.example/audit"


@dataclass
class Mdms:
    db: Database
    clock: FixedClock
    provider: FileKeyProvider
    audit: AuditLog
    data_keys: DataKeys
    registry: MeterRegistry
    pipeline: IngestPipeline
    hasher: SubjectHasher

    def provision(self, *meters: TestMeter) -> None:
        rows = [
            MeterKeyRow(
                i + 2, m.meter_id, m.ek, m.ak, m.mk, m.customer, m.feeder, "AB12", m.interval_s
            )
            for i, m in enumerate(meters)
        ]
        with self.db.transaction() as session:
            self.registry.provision(session, rows, "test", "test")

    def ingest(self, *frames: bytes, batch_id: str = "b") -> BatchResult:
        with self.db.transaction() as session:
            return self.pipeline.ingest(session, list(frames), "dc-test", batch_id, "test")

    def clock_us(self) -> int:
        return to_us(self.clock.now())

    def audit_types(self) -> list[str]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(text("SELECT event_type FROM audit_entry ORDER BY seq"))
            return [r[0] for r in rows]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.fromtimestamp(DAY0, UTC) + timedelta(days=10))


@pytest.fixture
def mdms(database: Database, tmp_path: Path, clock: FixedClock) -> Mdms:
    return make_mdms(database, tmp_path, clock)


def make_mdms(database: Database, tmp_path: Path, clock: FixedClock) -> Mdms:
    """Registry, pipeline, data keys and an audit log over ``database``."""
    provider = FileKeyProvider.create(settings_for(tmp_path / "data"))
    audit = AuditLog(ORIGIN, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), clock)
    hasher = SubjectHasher(secrets.token_bytes(32))
    data_keys = DataKeys(provider, audit, clock, hasher)
    registry = MeterRegistry(provider, data_keys, audit, clock, hasher)
    pipeline = IngestPipeline(registry, data_keys, audit, clock, hasher, IngestSettings())
    return Mdms(database, clock, provider, audit, data_keys, registry, pipeline, hasher)
