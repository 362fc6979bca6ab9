"""``broker demo``: the whole foundation on a fresh embedded data directory, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker import demo as story
from broker.cli.common import console
from broker.kit.clock import SystemClock
from broker.runtime import Runtime, initialise


def demo(
    out: Annotated[
        Path, typer.Option(help="Output directory (replaced if an earlier demo's).")
    ] = Path("demo-out"),
    events: Annotated[int, typer.Option(help="Audit events to write in group commits.")] = 20_000,
    customers: Annotated[int, typer.Option(help="Customers whose records are sealed.")] = 25,
) -> None:
    """Initialise keys, CA and database; seal, rotate, shred; serve mTLS; export and verify."""
    out = out.resolve()
    story.fresh_out_dir(out)
    settings, clock = story.demo_settings(out), SystemClock()
    report = story.DemoReport(out)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("initialise data directory, keys, CA, database", total=1)
        with report.step("initialise") as step:
            initialise(settings, clock)
            step["data_dir"] = str(settings.data_dir)
        progress.advance(task)
        rt = Runtime.open(settings, clock)
        try:
            _run_steps(rt, report, progress, events, customers)
        finally:
            rt.close()
    _show(report)
    console.print(f"summary: {report.write()}")


def _run_steps(
    rt: Runtime, report: story.DemoReport, progress: Progress, events: int, customers: int
) -> None:
    task = progress.add_task("issue certificates, revoke one", total=1)
    with report.step("certificates") as step:
        issued = story.issue_certificates(rt)
        step["issued"] = {name: i.role for name, i in issued.items()}
        step["revoked"] = ["retired-partner"]
    progress.advance(task)
    task = progress.add_task("seal customer records, rotate KEK, crypto-shred one", total=1)
    with report.step("keys") as step:
        step.update(story.seal_customers(rt, customers))
        step.update(story.rotate_and_shred(rt))
    progress.advance(task)
    task = progress.add_task("audit events in group commits", total=events)
    with report.step("audit_events") as step:
        step["written"] = story.audit_burst(rt, events, 5_000, lambda n: progress.advance(task, n))
    task = progress.add_task("serve /healthz over mutual TLS 1.3", total=1)
    with report.step("mtls") as step:
        step["healthz"] = story.mtls_checks(rt, issued)
    progress.advance(task)
    task = progress.add_task("export the audit log, verify offline, tamper", total=1)
    with report.step("audit_export") as step:
        step.update(story.export_and_verify(rt, report.out))
    progress.advance(task)
    report.facts["verify_ok"] = step["verify"].startswith("OK")
    report.facts["tampering_caught"] = step["tampered_verdict"] != "NOT CAUGHT"


def _show(report: story.DemoReport) -> None:
    table = Table("step", "seconds", "result", title="broker demo")
    for step in report.steps:
        shown = {k: v for k, v in step.items() if k not in ("step", "seconds")}
        table.add_row(step["step"], str(step["seconds"]), "\n".join(_lines(shown)))
    console.print(table)


def _lines(values: dict[str, object], indent: str = "") -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out.append(f"{indent}{key}:")
            out.extend(_lines(value, indent + "  "))
        else:
            out.append(f"{indent}{key}: {value}")
    return out
