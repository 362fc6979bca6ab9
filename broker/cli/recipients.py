"""``broker recipients``: onboarding and cutting off third parties and the EMS (C3.2, R3.3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from broker.cli.common import actor, console, print_json, runtime
from broker.errors import BrokerError
from broker.kit.clock import from_us, to_rfc3339
from broker.recipients.models import Kind, Recipient
from broker.recipients.service import Registration, purposes_of
from broker.runtime.wiring import open_ca, open_recipients

app = typer.Typer(help="The registry of data recipients.", no_args_is_help=True)
Name = Annotated[str, typer.Argument(help="The recipient id (its certificate's CN).")]
Reason = Annotated[str, typer.Option(help="Why, for the audit log.")]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BrokerError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _row(row: Recipient) -> dict[str, Any]:
    return {
        "recipient_id": row.recipient_id,
        "display_name": row.display_name,
        "kind": row.kind,
        "purposes": purposes_of(row),
        "webhook_url": row.webhook_url,
        "status": row.status,
        "created": to_rfc3339(from_us(row.created_us)),
        "updated": to_rfc3339(from_us(row.updated_us)),
    }


@app.command("register")
def register(
    name: Name,
    kind: Annotated[Kind, typer.Option(help="third_party, researcher, supplier or ems.")],
    display_name: Annotated[str | None, typer.Option(help="Shown to customers.")] = None,
    purpose: Annotated[list[str] | None, typer.Option(help="Allowed purpose (repeatable).")] = None,
    webhook: Annotated[str | None, typer.Option(help="https:// URL for push delivery.")] = None,
) -> None:
    """Register a recipient (active at once; it still needs a certificate)."""
    reg = Registration(name, display_name or name, kind, purpose or (), webhook)
    with runtime() as rt, rt.db.transaction() as session:
        open_recipients(rt).register(session, reg, actor())
    console.print(f"registered {kind.value} {name}")


@app.command("list")
def list_() -> None:
    """List recipients with their kind, purposes and status."""
    with runtime() as rt, rt.db.transaction() as session:
        rows = open_recipients(rt).all(session)
    table = Table("id", "name", "kind", "purposes", "status")
    for row in rows:
        table.add_row(
            row.recipient_id, row.display_name, row.kind, ", ".join(purposes_of(row)), row.status
        )
    console.print(table)


@app.command("show")
def show(name: Name) -> None:
    """One recipient as JSON, with its registered key ids."""
    with runtime() as rt, rt.db.transaction() as session:
        service = open_recipients(rt)
        record = _row(service.get(session, name))
        record["keys"] = [key.kid for key in service.keys(session, name)]
    print_json(record)


@app.command("issue-cert")
def issue_cert(
    name: Name,
    csr: Annotated[Path, typer.Option(help="The recipient's PEM CSR (its key stays with it).")],
    out: Annotated[Path, typer.Option(help="Where to write the PEM certificate.")],
    days: Annotated[
        int | None,
        typer.Option(help="Validity in days [default and most: BROKER_RECIPIENT_CERT_MAX_DAYS]."),
    ] = None,
) -> None:
    """Certify the recipient's CSR with the CA role of its kind."""
    csr_pem = _read(csr, "CSR")
    with runtime() as rt, rt.db.transaction() as session:
        issued = open_recipients(rt).issue_certificate(
            session, open_ca(rt), name, csr_pem, actor(), days
        )
    out.write_bytes(issued.cert_path.read_bytes())
    console.print(f"issued {issued.role} certificate {issued.serial} for {name}: {out}")


@app.command("add-key")
def add_key(
    name: Name, jwk: Annotated[Path, typer.Option(help="A public JWK (JSON) for private_key_jwt.")]
) -> None:
    """Register a public key the recipient signs its client assertions with."""
    try:
        key = json.loads(_read(jwk, "JWK"))
    except ValueError as exc:
        raise BrokerError(f"{jwk} is not JSON: {exc}") from exc
    if not isinstance(key, dict):
        raise BrokerError(f"{jwk} must hold one JWK object")
    with runtime() as rt, rt.db.transaction() as session:
        row = open_recipients(rt).add_key(session, name, key, actor())
    console.print(f"key {row.kid} registered for {name}")


@app.command("webhook")
def webhook(
    name: Name,
    url: Annotated[str | None, typer.Argument(help="https:// URL; omit with --remove.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the webhook.")] = False,
) -> None:
    """Set or remove the recipient's webhook for push feeds and deletion requests."""
    if (url is None) != remove:
        raise typer.BadParameter("give a URL, or --remove")
    with runtime() as rt, rt.db.transaction() as session:
        open_recipients(rt).set_webhook(session, name, url, actor())
    console.print(f"{name}: webhook {'removed' if remove else url}")


@app.command("suspend")
def suspend(name: Name, reason: Reason) -> None:
    """Suspend: no token is issued or honoured from the next request."""
    with runtime() as rt, rt.db.transaction() as session:
        open_recipients(rt).suspend(session, name, actor(), reason)
    console.print(f"{name} suspended")


@app.command("reinstate")
def reinstate(name: Name, reason: Reason) -> None:
    """Lift a suspension."""
    with runtime() as rt, rt.db.transaction() as session:
        open_recipients(rt).reinstate(session, name, actor(), reason)
    console.print(f"{name} active again")


@app.command("revoke")
def revoke(name: Name, reason: Reason) -> None:
    """Revoke for good, with every certificate of it (a new CRL is published)."""
    with runtime() as rt, rt.db.transaction() as session:
        open_recipients(rt).revoke(session, open_ca(rt), name, actor(), reason)
    console.print(f"{name} revoked; its certificates are on the CRL")
