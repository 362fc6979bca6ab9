"""``broker meters``: provision meters and their keys, list them, rotate their keys (C1.6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from broker.cli.common import actor, console, print_json, runtime
from broker.errors import BrokerError
from broker.keys.files import read_secret_file
from broker.settings import load_settings
from connectors.mdms.keyfile import read_key_file

app = typer.Typer(help="Meters and their keys.", no_args_is_help=True)


def read_transport_key(path: Path) -> bytes:
    """A transport key file: the key in hex (16, 24 or 32 bytes), readable by its owner only."""
    text = read_secret_file(load_settings(), path).decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise BrokerError(f"transport key file {path} does not hold a hex key") from None
    if len(key) not in (16, 24, 32):
        raise BrokerError(f"transport key in {path} is {len(key)} bytes, not 16, 24 or 32")
    return key


@app.command("provision")
def provision(
    key_file: Annotated[
        Path,
        typer.Option(
            help="CSV: system_title,encryption_key,authentication_key,customer_ref,feeder,"
            "postcode[,master_key]; keys in hex."
        ),
    ],
    transport_key: Annotated[
        Path | None,
        typer.Option(help="File with the hex transport key the keys are RFC 3394-wrapped under."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register meters with their keys (stored only wrapped by the KEK) and their customers."""
    rows = read_key_file(key_file, read_transport_key(transport_key) if transport_key else None)
    with runtime() as rt, rt.db.transaction() as session:
        report = rt.meters.provision(session, rows, actor(), key_file.name)
    if as_json:
        print_json(report)
        return
    console.print(
        f"{report['provisioned']} meters provisioned, {report['unchanged']} already known, "
        f"{report['customers_created']} new customers"
    )


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The provisioned meters: customer, location, key version, last reading."""
    with runtime() as rt, rt.db.transaction() as session:
        meters = [m.model_dump() for m in rt.meters.meters(session)]
    if as_json:
        print_json(meters)
        return
    table = Table("meter", "customer", "feeder", "postcode", "status", "key v", "last end (s)")
    for m in meters:
        table.add_row(
            m["meter_id"],
            m["customer_ref"],
            m["feeder"],
            m["postcode"],
            m["status"],
            str(m["key_version"]),
            str(m["last_end_s"] or ""),
        )
    console.print(table)
    console.print(f"{len(meters)} meters")
