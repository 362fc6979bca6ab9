"""``broker deliveries``: the push outbox for operators (webhook deliveries, dead letters)."""

from __future__ import annotations

from typing import Annotated

import typer

from broker.cli.common import actor, console, print_json, runtime
from broker.delivery.models import DeliveryStatus
from broker.delivery.outbox import delivery_json
from broker.runtime.wiring import open_outbox

app = typer.Typer(help="Webhook deliveries: list, dead letters, redrive.", no_args_is_help=True)


@app.command("list")
def list_(
    recipient: Annotated[str | None, typer.Option(help="Only this recipient's.")] = None,
    status: Annotated[
        DeliveryStatus | None, typer.Option(help="pending, delivered or dead (dead letters).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """Deliveries, newest first, with attempts, last error and receipt."""
    with runtime() as rt, rt.db.transaction() as session:
        rows = [
            delivery_json(r)
            for r in open_outbox(rt).deliveries(session, recipient, status and status.value, limit)
        ]
    print_json(rows)


@app.command("redrive")
def redrive(delivery_id: Annotated[str, typer.Argument(help="A dead letter's id.")]) -> None:
    """Put a dead letter back in the queue; the running server's worker retries it."""
    with runtime() as rt:
        open_outbox(rt).redrive(delivery_id, actor())
    console.print(f"{delivery_id} queued again")
