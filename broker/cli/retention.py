"""``broker retention``: purge the broker's own data past its retention period.

``run`` purges every kind that is due (see ``broker.retention.service``) in one transaction,
audited as one ``retention.purged`` entry with the counts; ``--dry-run`` only counts.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from broker.cli.common import actor, console, print_json, runtime
from broker.retention.service import HOW, open_retention

app = typer.Typer(help="Retention of the broker's own data (readings, bodies, inputs).")


@app.command("run")
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what is due; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Purge what is past its retention period (BROKER_RETENTION_* settings)."""
    with runtime() as rt:
        retention = open_retention(rt.db, rt.audit, rt.clock, rt.settings)
        report = retention.run(actor(), dry_run=dry_run)
    if as_json:
        print_json(report.as_json())
        return
    verb = "due (dry run: nothing changed)" if dry_run else "purged"
    table = Table("kind", "kept (days)", "older than", "action", verb)
    for kind in report.kinds:
        table.add_row(
            kind.kind.value,
            str(kind.keep_days),
            kind.before.strftime("%Y-%m-%d %H:%M UTC"),
            HOW[kind.kind],
            str(kind.count),
        )
    console.print(table)
    if dry_run:
        console.print(f"dry run: {report.total} items due; run without --dry-run to purge")
    else:
        console.print(f"{report.total} items purged; audit entry #{report.audit_seq}")
