"""``broker meters``: provision meters and their keys, list them, rotate their keys (C1.6)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.progress import Progress, TaskID, track
from rich.table import Table

from broker.cli.common import actor, check_pushes, console, print_json, runtime
from broker.errors import BrokerError
from broker.keys.files import read_secret_file
from broker.settings import load_settings
from connectors.mdms.keyfile import read_key_file
from connectors.mdms.rotation import MDMS_SYSTEM_TITLE, KeyRotator
from connectors.meters.files import write_capture, write_customers, write_keyfile
from connectors.meters.simulator import Fleet
from connectors.meters.state import (
    STATE_FILE,
    FleetLink,
    FleetStateError,
    load_fleet,
    save_fleet,
)

T = TypeVar("T")

app = typer.Typer(help="Meters and their keys.", no_args_is_help=True)


def read_transport_key(path: Path) -> bytes:
    """A transport key file: the key in hex (16, 24 or 32 bytes), readable by its owner only."""
    if not path.is_file():
        raise BrokerError(f"transport key file {path} does not exist")
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


@app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option(help="Folder of the simulated fleet (created).")],
    meters: Annotated[int, typer.Option(min=1, help="Meters in a new fleet.")] = 200,
    days: Annotated[int, typer.Option(min=1, max=35, help="Days of pushes to produce.")] = 7,
    seed: Annotated[int, typer.Option(help="Seed of a new fleet.")] = 1,
    interval: Annotated[int, typer.Option(help="Profile interval in seconds.")] = 900,
    push_intervals: Annotated[
        int, typer.Option(help="Intervals per push (96 = one push a day at 15 min).")
    ] = 96,
) -> None:
    """Simulate meters: a key file, a customer file, and a capture of their pushes.

    A new fleet's days end at midnight UTC today; run it again on the same folder to produce
    the following days, with the meters' counters, registers and keys carried on."""
    if (out / STATE_FILE).exists():
        fleet, start = _load(out)
        check_pushes(fleet.interval_s, push_intervals)
    else:
        check_pushes(interval, push_intervals)  # before anything is written
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        fleet = Fleet.create(meters, seed, interval)
        start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
        write_keyfile(out / "keys.csv", fleet.meters)
        write_customers(out / "customers.csv", fleet.meters)
    capture = out / f"capture-{start.isoformat()}-{days}d.hex"
    total = len(fleet) * days * (86_400 // fleet.interval_s // push_intervals)
    with Progress(console=console) as progress:
        task = progress.add_task("pushes", total=total)
        pushes = (
            f for _m, f in _ticking(fleet.frames(start, days, push_intervals), progress, task)
        )
        written = write_capture(capture, pushes, comment=f"{len(fleet)} meters from {start}")
    save_fleet(fleet, out, start + dt.timedelta(days=days))
    console.print(f"{written} frames of {len(fleet)} meters from {start}: {capture}")
    console.print(f"key file {out / 'keys.csv'}, customers {out / 'customers.csv'}")


def _load(folder: Path) -> tuple[Fleet, dt.date]:
    try:
        return load_fleet(folder)
    except FleetStateError as exc:
        raise BrokerError(str(exc)) from None


def _ticking(items: Iterator[T], progress: Progress, task: TaskID) -> Iterator[T]:
    for item in items:
        progress.advance(task)
        yield item


@app.command("rotate-keys")
def rotate_keys(
    simulator: Annotated[Path, typer.Option(help="Folder of the simulated fleet.")],
    meter: Annotated[
        list[str] | None, typer.Option(help="Meter system title (repeatable); default all.")
    ] = None,
    grace_hours: Annotated[
        float, typer.Option(min=0, help="Hours frames under the old keys still verify.")
    ] = 24.0,
    abandon_pending: Annotated[
        bool,
        typer.Option(
            "--abandon-pending",
            help="Discard keys of an earlier transfer that never got an answer (only if it "
            "never reached the meter: a meter holding them would be cut off).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rotate meter keys by DLMS global key transfer (RFC 3394 wrap) to simulated meters."""
    fleet, next_day = _load(simulator)
    wanted = (
        [m.upper() for m in meter]
        if meter
        else [m.system_title.hex().upper() for m in fleet.meters]
    )
    link = FleetLink(fleet, MDMS_SYSTEM_TITLE)
    results = []
    with runtime() as rt:
        rotator = KeyRotator(
            rt.db, rt.meters, rt.kek, rt.audit, rt.clock, rt.hasher, int(grace_hours * 3600)
        )
        try:
            for meter_id in track(wanted, description="key transfer", console=console):
                results.append(rotator.rotate(meter_id, link, actor(), abandon_pending))
        finally:
            save_fleet(fleet, simulator, next_day)  # the meters keep what they were sent
    outcomes = Counter(r.outcome for r in results)
    if as_json:
        print_json([r.__dict__ for r in results])
        return
    for r in results:
        if r.outcome != "rotated":
            console.print(f"{r.meter_id}: {r.outcome} ({r.detail})")
    console.print(f"rotated {outcomes['rotated']} of {len(results)} meters: {dict(outcomes)}")
