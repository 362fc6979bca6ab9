"""The database goes away in the middle of a batch: the batch is answered with a clear
``StorageUnavailable`` (HTTP 503, so the concentrator keeps it and sends it again), nothing of it
is half-written, and the resent batch is stored whole."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.errors import StorageUnavailable
from broker.kit.clock import FixedClock
from broker.storage.db import Database
from connectors.mdms.ingest import IngestPipeline
from tests.conftest import PG_ADMIN_DSN, empty_postgres
from tests.connectors.mdms.conftest import Mdms, make_mdms
from tests.connectors.mdms.factory import TestMeter


class CutsTheConnection:
    """An audit sink that has the server end this session's connection before it records:
    the batch's blocks are written by then, its audit entry and commit are not."""

    def __init__(self, inner: AuditSink) -> None:
        self.inner = inner

    def record(self, session: Session, events: Sequence[AuditEvent]) -> list[int]:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        return self.inner.record(session, events)


def _count(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@pytest.fixture
def pg_mdms(pg_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[Mdms]:
    """The MDMS on PostgreSQL only: cutting a connection needs a server."""
    db = Database.from_url(pg_url)
    try:
        yield make_mdms(db, tmp_path, clock)
    finally:
        empty_postgres(db)
        db.dispose()


@pytest.mark.postgres
def test_database_lost_mid_batch_is_storage_unavailable_and_the_resend_stores_it_whole(
    pg_mdms: Mdms,
) -> None:
    mdms = pg_mdms
    meters = [TestMeter(i) for i in range(1, 6)]
    mdms.provision(*meters)
    frames = [m.push_day(0) for m in meters]
    broken = IngestPipeline(
        mdms.registry, mdms.data_keys, CutsTheConnection(mdms.audit), mdms.clock, mdms.hasher
    )
    with pytest.raises(StorageUnavailable, match="database error"), mdms.db.transaction() as s:
        broken.ingest(s, frames, "dc-test", "b1", "test")
    mdms.db.engine.dispose()  # the pool's connection is dead
    assert _count(mdms.db, "reading_day") == 0
    result = mdms.ingest(*frames, batch_id="b1")
    assert [a.status for a in result.answers] == ["accepted"] * 5
    assert _count(mdms.db, "reading_day") == 5
