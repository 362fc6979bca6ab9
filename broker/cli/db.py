"""``broker db`` (schema migrations) and ``broker init`` (a fresh data directory)."""

from __future__ import annotations

import typer

from broker.cli.common import actor, console
from broker.kit.clock import SystemClock
from broker.policy.service import activate_shipped_if_none
from broker.runtime.core import Runtime, initialise, upgrade_schema
from broker.schema import migrate
from broker.settings import load_settings
from broker.storage.db import Database

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Apply every pending migration."""
    db = upgrade_schema(load_settings())
    console.print(f"database at revision {migrate.current_revision(db.engine)}")
    db.dispose()


@app.command("status")
def status() -> None:
    """Show the database revision and the code's head revision."""
    db = Database.from_url(load_settings().db_url())
    db.ping()
    current, head = migrate.current_revision(db.engine), migrate.head_revision()
    db.dispose()
    state = "up to date" if current == head else "needs `broker db upgrade`"
    console.print(f"database revision {current}, code head {head}: {state}")


def init() -> None:
    """Create the data directory, keys, CA and database schema (safe to run again)."""
    settings = load_settings()
    initialise(settings, SystemClock())
    rt = Runtime.open(settings)
    try:
        revision = activate_shipped_if_none(
            settings, rt.db.transaction, rt.audit, rt.clock, actor()
        )
    finally:
        rt.close()
    console.print(f"initialised {settings.data_dir.resolve()}")
    if revision is not None:
        console.print(f"activated the shipped release policy as revision {revision}")
