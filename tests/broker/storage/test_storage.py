"""Storage on SQLite and PostgreSQL: one commit point, clear errors."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from broker.errors import StorageUnavailable
from broker.storage.db import Database
from tests.conftest import PG_ADMIN_DSN


def test_transaction_commits_once_at_the_end(database: Database) -> None:
    with database.transaction() as session:
        session.execute(text("UPDATE audit_head SET size = 7 WHERE id = 1"))
    with database.transaction() as session:
        assert session.execute(text("SELECT size FROM audit_head")).scalar_one() == 7


def test_exception_rolls_the_whole_transaction_back(database: Database) -> None:
    with pytest.raises(ZeroDivisionError), database.transaction() as session:
        session.execute(text("UPDATE audit_head SET size = 7 WHERE id = 1"))
        _ = 1 / 0
    with database.transaction() as session:
        assert session.execute(text("SELECT size FROM audit_head")).scalar_one() == 0


def test_missing_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable, match="does not exist; run `broker init`"):
        Database.from_url(f"sqlite:///{tmp_path / 'nowhere' / 'broker.db'}")


def test_unreachable_database_is_a_clear_error() -> None:
    db = Database.from_url("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(StorageUnavailable, match="database unreachable"):
        db.ping()


def test_postgres_that_goes_away_mid_write_loses_nothing_committed(pg_url: str) -> None:
    db = Database.from_url(pg_url)
    try:
        with db.transaction() as session:
            session.execute(text("UPDATE audit_head SET size = 3 WHERE id = 1"))
        with pytest.raises(StorageUnavailable), db.transaction() as session:
            session.execute(text("UPDATE audit_head SET size = 9 WHERE id = 1"))
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            session.execute(text("UPDATE audit_head SET size = 10 WHERE id = 1"))
        with db.transaction() as session:
            assert session.execute(text("SELECT size FROM audit_head")).scalar_one() == 3
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE audit_head SET size = 0 WHERE id = 1"))
        db.dispose()
