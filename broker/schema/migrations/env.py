"""Alembic environment: always run with a connection handed over by ``broker.schema.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from broker.schema.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `broker db upgrade`, which supplies the connection")
_run(connection)
