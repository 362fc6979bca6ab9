"""``broker demo``: the whole foundation on a fresh embedded data directory, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker.cli.common import check_pushes, console
from broker.kit.clock import SystemClock
from broker.runtime.core import Runtime, initialise
from demo import story
from demo.path import (
    DEMO_CUSTOMER,
    ERASED_CUSTOMER,
    ERASED_METER,
    PathOptions,
    issue_concentrators,
    run_path,
)
from demo.policy import consent_and_policy
from demo.service import first_day_of, service_story


def demo(
    out: Annotated[
        Path, typer.Option(help="Output directory (replaced if an earlier demo's).")
    ] = Path("demo-out"),
    events: Annotated[int, typer.Option(help="Audit events to write in group commits.")] = 20_000,
    meters: Annotated[int, typer.Option(min=10, help="Simulated meters.")] = 200,
    days: Annotated[int, typer.Option(min=3, max=30, help="Days of readings.")] = 7,
    push_intervals: Annotated[
        int, typer.Option(help="15-minute intervals per push (4: hourly; 96: daily).")
    ] = 4,
    rotate: Annotated[int, typer.Option(min=0, help="Meters whose keys are rotated.")] = 20,
) -> None:
    """The story end to end: keys and CA; meters → concentrators → MDMS over mutual TLS with
    attacks caught and keys rotated; a consent, release decisions by the signed policy, a
    withdrawal and a policy preview; audit events; an audit export verified offline."""
    check_pushes(900, push_intervals)
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
            path = PathOptions(min(meters, 100_000), days, push_intervals, min(rotate, meters))
            _run_steps(rt, report, progress, events, path)
        finally:
            rt.close()
    _show(report)
    console.print(f"summary: {report.write()}")


def _run_steps(
    rt: Runtime,
    report: story.DemoReport,
    progress: Progress,
    events: int,
    path: PathOptions,
) -> None:
    task = progress.add_task("issue certificates, revoke one", total=1)
    with report.step("certificates") as step:
        issued = story.issue_certificates(rt)
        concentrators = issue_concentrators(rt, story.ACTOR)
        step["issued"] = {name: i.role for name, i in {**issued, **concentrators}.items()}
        step["revoked"] = ["retired-partner"]
    progress.advance(task)
    pushes = path.meters * path.days * (96 // path.push_intervals)
    task = progress.add_task("meters → concentrators → MDMS over mutual TLS", total=pushes)
    with report.step("reference_path") as step:
        step.update(
            run_path(
                rt,
                report.out,
                concentrators,
                path,
                story.ACTOR,
                lambda n: progress.advance(task, n),
            )
        )
    report.facts["reference_path"] = {
        "frames": step["frames"],
        "attacks": step["attacks"],
        "key_rotation": step["key_rotation (C1.6)"],
    }
    task = progress.add_task("rotate the KEK, erase a customer (crypto-shredding)", total=1)
    with report.step("keys") as step:
        step.update(story.rotate_and_shred(rt, ERASED_CUSTOMER, ERASED_METER))
    progress.advance(task)
    task = progress.add_task("consent, release decisions, withdrawal, policy preview", total=1)
    with report.step("consent_and_policy") as step:
        step.update(consent_and_policy(rt, DEMO_CUSTOMER, report.out, story.ACTOR))
    progress.advance(task)
    report.facts["consent_and_policy"] = {
        "decisions": step["decisions"],
        "bad_bundle_refused": step["officer"]["bad_bundle"].startswith("refused"),
    }
    task = progress.add_task(
        "recipients, OAuth, consent page, pull and push, EMS, withdrawal, deletion", total=1
    )
    with report.step("service") as step:
        step.update(service_story(rt, DEMO_CUSTOMER, report.out, first_day_of(path.days)))
    progress.advance(task)
    report.facts["service"] = {
        key: step[key]
        for key in (
            "consent_flow",
            "energy_app_pull",
            "ems_pull",
            "token_with_another_certificate",
            "energy_app_after_withdrawal",
            "energy_app_push",
            "insight_co_household_data",
            "insight_co_research_aggregate",
            "deletion",
            "regulator_export",
            "counts",
        )
    }
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
