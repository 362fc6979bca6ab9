"""Fixtures shared by every test: a migrated database on SQLite and on PostgreSQL.

Every storage test takes ``database`` and so runs on both backends. PostgreSQL is the server at
127.0.0.1:5432 (user postgres, trust auth, as on CI): a database of its own is created for the
test session and emptied after each test. Where no server answers, those cases are skipped with
the reason.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from broker.schema import migrate
from broker.schema.tables import metadata
from broker.storage.db import Database

PG_ADMIN_DSN = os.environ.get("BROKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _pg_unavailable_reason() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {str(exc).strip()[:200]}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    reason = _pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    name = f"broker_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    db = Database.from_url(url)
    migrate.upgrade(db.engine)
    db.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_postgres(db: Database) -> None:
    """Every table emptied, the audit head reset: a clean database for the next test."""
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names}"))
        conn.execute(text("INSERT INTO audit_head (id, size) VALUES (1, 0)"))


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database; each test gets its own rows."""
    if request.param == "sqlite":
        db = Database.from_url(f"sqlite:///{tmp_path / 'broker.db'}")
        migrate.upgrade(db.engine)
        yield db
        db.dispose()
        return
    db = Database.from_url(request.getfixturevalue("pg_url"))
    try:
        yield db
    finally:
        empty_postgres(db)
        db.dispose()


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the clone (conformance suites); CI has it."""
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the conformance suites must sit beside the clone")
    return SHARED
