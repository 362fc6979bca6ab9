"""``broker customers``: customers' personal data, sealed field by field (C1.7, R1.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from broker.audit.events import AuditEvent
from broker.cli.common import actor, console, print_json, runtime
from broker.customers.identities import Identities
from broker.runtime.wiring import erase_customer
from connectors.mdms.keyfile import read_customer_file

app = typer.Typer(help="Customers (personal data, sealed).", no_args_is_help=True)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV: customer_ref,name,address,account_number.")],
) -> None:
    """Store customers' name, address and account number, each sealed under their data key."""
    rows = read_customer_file(file)
    with runtime() as rt, rt.db.transaction() as session:
        report = rt.meters.import_customers(session, rows, actor(), file.name)
    console.print(f"{report['customers']} customers stored ({report['created']} new)")


@app.command("show")
def show(
    customer: Annotated[str, typer.Argument(help="The customer reference.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open a customer's personal data (the access is recorded in the audit log)."""
    with runtime() as rt, rt.db.transaction() as session:
        record = rt.meters.customer_record(session, customer)
        event = AuditEvent("mdms.customer_viewed", actor(), rt.hasher(customer), {})
        rt.audit.record(session, [event])
    if as_json:
        print_json(record)
        return
    for key, value in record.items():
        console.print(f"{key}: {value}")


@app.command("erase")
def erase(
    customer: Annotated[str, typer.Argument(help="The customer reference.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "erasure request",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a customer: withdraw their consents, send every recipient that received their
    data a signed deletion request, and crypto-shred their data keys. Cannot be undone."""
    if not yes:
        typer.confirm(f"Erase {customer} for good (their data becomes unreadable)?", abort=True)
    with runtime() as rt:
        summary = erase_customer(rt, customer, actor(), reason)
    print_json(summary)


_ISSUER = typer.Option(help="The OpenID provider's issuer URL, exactly as in its ID tokens.")
_SUBJECT = typer.Option(help="The customer's subject (sub) at that provider.")


@app.command("link-identity")
def link_identity(
    customer: Annotated[str, typer.Argument(help="The customer reference.")],
    issuer: Annotated[str, _ISSUER],
    subject: Annotated[str, _SUBJECT],
) -> None:
    """Let an identity at the portal's OpenID provider sign in as this customer."""
    with runtime() as rt, rt.db.transaction() as session:
        made = Identities(rt.audit, rt.clock, rt.hasher).link(
            session, customer, issuer, subject, actor()
        )
    done = "linked to" if made else "was already linked to"
    console.print(f"{customer} {done} {subject} at {issuer}")


@app.command("unlink-identity")
def unlink_identity(
    customer: Annotated[str, typer.Argument(help="The customer reference.")],
    issuer: Annotated[str, _ISSUER],
    subject: Annotated[str, _SUBJECT],
) -> None:
    """Stop an identity at the OpenID provider signing in as this customer."""
    with runtime() as rt, rt.db.transaction() as session:
        Identities(rt.audit, rt.clock, rt.hasher).unlink(
            session, customer, issuer, subject, actor()
        )
    console.print(f"{customer} unlinked from {subject} at {issuer}")
