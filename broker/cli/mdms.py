"""``broker mdms``: ingest a capture, read a meter's stored days, see frame tallies."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlmodel import col, func, select

from broker.cli.common import actor, console, print_json, runtime
from broker.errors import BrokerError
from broker.kit.clock import from_us
from connectors.mdms.block import DAY_S
from connectors.mdms.capture import ingest_capture, read_capture
from connectors.mdms.models import IngestTally
from connectors.mdms.readings import read_days
from connectors.mdms.vee import flag_names

app = typer.Typer(
    help="The reference MDMS: ingest, stored readings, tallies.", no_args_is_help=True
)


@app.command("ingest")
def ingest(
    file: Annotated[Path, typer.Argument(help="Capture: one hex APDU per line, # comments.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print every frame's answer.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Frames per batch.")] = 1000,
) -> None:
    """Ingest a capture through the same pipeline as POST /mdms/v1/frames."""
    total = sum(1 for _ in read_capture(file))
    with runtime() as rt, _progress(as_json) as progress:
        task = progress.add_task(f"ingest {file.name}", total=total)
        report = ingest_capture(
            rt.db, rt.ingest, file, actor(), batch_size, lambda n: progress.advance(task, n)
        )
    if as_json:
        print_json(report.__dict__)
        return
    table = Table("outcome", "frames", title=f"{report.frames} frames from {file}")
    for outcome, n in sorted(report.outcomes.items()):
        table.add_row(outcome, str(n))
    console.print(table)
    console.print(f"readings stored: {report.readings_stored}, estimated: {report.estimates}")
    if report.flagged:
        console.print(f"days with quality flags: {report.flagged}")


def _progress(quiet: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console, disable=quiet)


@app.command("readings")
def readings(
    meter: Annotated[str, typer.Option(help="Meter system title (16 hex digits).")],
    day: Annotated[str, typer.Option(help="First UTC day, YYYY-MM-DD.")],
    days: Annotated[int, typer.Option(min=1, max=366, help="How many days.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open a meter's stored days (operator view, with quality flags)."""
    try:
        first = (dt.date.fromisoformat(day) - dt.date(1970, 1, 1)).days
    except ValueError:
        raise BrokerError(f"--day {day!r} is not a date (YYYY-MM-DD)") from None
    with runtime() as rt, rt.db.transaction() as session:
        stored = read_days(session, rt.data_keys, meter.upper(), first, first + days - 1)
    rows: list[dict[str, Any]] = [
        {
            "end": from_us(int(end) * 1_000_000).isoformat(),
            "register_wh": int(reg),
            "interval_wh": int(value),
            "status": int(status),
            "quality": flag_names(int(q)),
        }
        for d in stored
        for end, reg, value, status, q in zip(
            d.readings.end_s,
            d.readings.register,
            d.readings.value,
            d.readings.status,
            d.readings.quality,
            strict=True,
        )
    ]
    if as_json:
        print_json({"meter": meter.upper(), "readings": rows})
        return
    table = Table("interval end (UTC)", "register Wh", "interval Wh", "quality")
    for r in rows:
        table.add_row(
            r["end"], str(r["register_wh"]), str(r["interval_wh"]), ",".join(r["quality"])
        )
    console.print(table)
    console.print(f"{len(rows)} readings over {len(stored)} stored day(s) of {days}")


@app.command("stats")
def stats(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Frames by outcome (accepted, duplicate, or the rejection reason), per day and source."""
    with runtime() as rt, rt.db.transaction() as session:
        query = select(
            IngestTally.day, IngestTally.source, IngestTally.outcome, func.sum(IngestTally.frames)
        ).group_by(col(IngestTally.day), col(IngestTally.source), col(IngestTally.outcome))
        rows: list[dict[str, Any]] = [
            {
                "day": from_us(d * DAY_S * 1_000_000).date().isoformat(),
                "source": s,
                "outcome": o,
                "frames": int(n),
            }
            for d, s, o, n in session.exec(query)
        ]
    if as_json:
        print_json(rows)
        return
    table = Table("day", "source", "outcome", "frames")
    for r in rows:
        table.add_row(r["day"], r["source"], r["outcome"], str(r["frames"]))
    console.print(table)
