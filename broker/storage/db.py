"""Engines and the one commit point per job or request.

SQLite and PostgreSQL behave the same here: SQLite runs in WAL mode with ``BEGIN IMMEDIATE``
(a writer takes the write lock when its transaction starts, as ``SELECT ... FOR UPDATE`` does on
PostgreSQL), foreign keys on, and a busy timeout instead of instant "database is locked" errors.
Services add and flush; only ``Database.transaction()`` commits. No statement sends text with
a NUL or another control character (``broker.storage.guard``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from broker.errors import StorageUnavailable
from broker.storage.guard import refuse_control_text


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        parent = Path(database).parent
        if not parent.is_dir():
            raise StorageUnavailable(
                f"data directory {parent} does not exist; run `broker init` "
                "(or set BROKER_DATA_DIR)"
            )
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            "synchronous=NORMAL",
            "cache_size=-65536",
            "wal_autocheckpoint=8192",
        ):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engine(url: str) -> Engine:
    """The engine of ``url``; no statement of it sends text with a control character
    (``broker.storage.guard``)."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = _sqlite_engine(url)
    else:
        engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    refuse_control_text(engine)
    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class Database:
    """An engine and the transaction boundary that commits (once) or rolls back."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(make_engine(url))

    def ping(self) -> None:
        """Raise ``StorageUnavailable`` with the server's reason if the database is unreachable."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise StorageUnavailable(f"database unreachable: {exc.orig}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """The one commit point: commit when the block ends, roll back on any exception."""
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except OperationalError as exc:
            raise StorageUnavailable(f"database error: {exc.orig}") from exc
        except (psycopg.OperationalError, sqlite3.OperationalError) as exc:
            # raised by statements sent straight to the driver (broker.storage.raw)
            raise StorageUnavailable(f"database error: {exc}") from exc

    def dispose(self) -> None:
        self.engine.dispose()
