"""``broker ca``: the private CA for mutual TLS (C1.2, C2.1, C3.2, C4.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from broker.ca.authority import ROLES, CAError, CertificateAuthority
from broker.cli.common import actor, console, runtime
from broker.kit.clock import SystemClock, from_us
from broker.runtime.wiring import open_ca
from broker.settings import load_settings

app = typer.Typer(help="The private certificate authority for mutual TLS.", no_args_is_help=True)


@app.command("init")
def init() -> None:
    """Create the CA key (0600), root certificate and an empty CRL."""
    settings = load_settings()
    ca = CertificateAuthority.create(settings, SystemClock())
    console.print(f"CA created: {ca.cert_path}")


@app.command("issue")
def issue(
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")],
    name: Annotated[str, typer.Option(help="The holder's name (certificate CN).")],
    csr: Annotated[Path | None, typer.Option(help="Sign this CSR instead of making a key.")] = None,
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    dns: Annotated[
        list[str] | None, typer.Option(help="DNS name for a server (repeatable).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option(help="IP address for a server (repeatable).")
    ] = None,
) -> None:
    """Issue a certificate carrying ROLE; writes ca/issued/NAME.pem (and .key without --csr)."""
    try:
        csr_pem = csr.read_bytes() if csr else None
    except OSError as exc:
        raise CAError(f"cannot read the CSR {csr}: {exc.strerror}") from exc
    with runtime() as rt, rt.db.transaction() as session:
        made = open_ca(rt).issue(
            session,
            rt.audit,
            role=role,
            name=name,
            actor=actor(),
            csr_pem=csr_pem,
            days=days,
            dns=dns or (),
            ips=ip or (),
        )
    console.print(f"issued {made.role} certificate {made.serial} for {made.name}: {made.cert_path}")
    if made.key_path:
        console.print(f"private key (0600): {made.key_path}")


@app.command("revoke")
def revoke(
    serial: Annotated[str | None, typer.Option(help="Serial number (hex).")] = None,
    name: Annotated[str | None, typer.Option(help="Revoke every live certificate of NAME.")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "unspecified",
) -> None:
    """Revoke certificates and publish a new CRL; a running server refuses them at once."""
    with runtime() as rt, rt.db.transaction() as session:
        serials = open_ca(rt).revoke(
            session, rt.audit, actor=actor(), serial=serial, name=name, reason=reason
        )
    console.print(f"revoked {', '.join(serials)}; CRL updated")


@app.command("list")
def list_() -> None:
    """List issued certificates with their state."""
    with runtime() as rt, rt.db.transaction() as session:
        rows = open_ca(rt).certificates(session)
    table = Table("name", "role", "serial", "expires", "state")
    for row in rows:
        expires = from_us(row.not_after_us).date().isoformat()
        state = "revoked" if row.revoked_us else "valid"
        table.add_row(row.name, row.role, row.serial, expires, state)
    console.print(table)


@app.command("crl")
def crl() -> None:
    """Re-sign the CRL from the database (fresh nextUpdate) and print it."""
    with runtime() as rt, rt.db.transaction() as session:
        path = open_ca(rt).refresh_crl(session)
    print(path.read_text(), end="")
