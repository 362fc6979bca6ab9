"""The schema on SQLite and PostgreSQL: the migrations reach head and build exactly the tables
every domain declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from broker.schema import migrate
from broker.schema.tables import metadata
from broker.storage.db import Database


def test_migrations_reach_head_and_match_the_models(database: Database) -> None:
    assert migrate.current_revision(database.engine) == migrate.head_revision()
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
