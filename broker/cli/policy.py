"""``broker policy``: the privacy officer's tools — check, test, diff, explain, activate.

A candidate bundle is a directory in OPA's bundle layout (the shipped one is ``policies/``).
Nothing here changes the running policy except ``activate``, and ``activate`` refuses a bundle
that fails ``check`` or its own tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from broker.cli.common import actor, console, print_json, runtime
from broker.errors import BrokerError
from broker.policy.bundle import load_bundle, shipped_bundle_dir
from broker.policy.check import check_bundle
from broker.policy.decision import TABLE as DECISIONS
from broker.policy.diff import diff as diff_decisions
from broker.policy.diff import explain as explain_decision
from broker.policy.store import PolicyRejected, PolicyStore
from broker.policy.testing import run_tests
from broker.settings import load_settings

app = typer.Typer(
    help="Release policies (Rego): check, test, preview and activate a revision.",
    no_args_is_help=True,
)

BundleDir = Annotated[
    Path | None,
    typer.Argument(help="Bundle directory (default: the shipped policies/).", show_default=False),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class PolicyCheckFailed(BrokerError):
    exit_code = 1


def _dir(path: Path | None) -> Path:
    return path if path is not None else shipped_bundle_dir()


@app.command("check")
def check(directory: BundleDir = None, as_json: JsonFlag = False) -> None:
    """Parse, Rego v1, packages, builtin allow-list, formatting, metadata and catalogue."""
    bundle = load_bundle(_dir(directory))
    report = check_bundle(bundle)
    if as_json:
        print_json(report.as_json())
    else:
        for problem in report.problems:
            console.print(str(problem), highlight=False)
        status = "ok" if report.ok else f"{len(report.problems)} problems"
        console.print(
            f"{bundle.root}: {report.modules} policy modules, {report.tests} test modules: {status}"
        )
    if not report.ok:
        raise PolicyCheckFailed(f"{bundle.root} fails policy check")


@app.command("test")
def run_bundle_tests(directory: BundleDir = None, as_json: JsonFlag = False) -> None:
    """Run the bundle's test_ rules: pass or fail per test, and rule coverage."""
    bundle = load_bundle(_dir(directory))
    report = run_tests(bundle)
    if as_json:
        print_json(report.as_json())
    else:
        for result in report.results:
            mark = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "error": "[red]ERROR[/]"}
            line = (
                f"{mark[result.outcome]} {result.package}.{result.name} ({result.duration_us} µs)"
            )
            console.print(line + (f": {result.message}" if result.message else ""))
        for path, cov in report.coverage.items():
            missed = ", ".join(map(str, cov["not_covered"])) or "none"
            console.print(f"coverage {path}: {cov['percent']}% (lines not covered: {missed})")
        console.print(
            f"{report.passed}/{len(report.results)} passed; coverage {report.coverage_percent()}%"
        )
    if not report.ok:
        raise PolicyCheckFailed(
            "no tests found" if not report.results else f"{bundle.root}: tests fail"
        )


@app.command("diff")
def diff(
    candidate: Annotated[Path, typer.Option("--candidate", help="The candidate bundle directory.")],
    limit: Annotated[
        int | None, typer.Option(help="Replay only the most recent N decisions.", min=1)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay recorded decisions against a candidate and show what would change."""
    bundle = load_bundle(candidate)
    report_check = check_bundle(bundle)
    if not report_check.ok:
        raise PolicyCheckFailed(
            f"{candidate} fails policy check: {report_check.problems[0]} "
            "(run `broker policy check` for all problems)"
        )
    with runtime() as rt, rt.db.transaction() as session:
        total = session.execute(select(func.count()).select_from(DECISIONS)).scalar_one()
        query = select(
            DECISIONS.c.decision_id,
            DECISIONS.c.purpose,
            DECISIONS.c.recipient,
            DECISIONS.c.input_json,
            DECISIONS.c.result_json,
        ).order_by(DECISIONS.c.at_us.desc(), DECISIONS.c.decision_id)
        if limit is not None:
            query = query.limit(limit)
            total = min(total, limit)
        rows = (dict(r._mapping) for r in session.execute(query.execution_options(yield_per=5000)))
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=as_json or total < 5000,
        ) as progress:
            task = progress.add_task("replay", total=total)
            report = diff_decisions(rows, bundle, lambda n: progress.advance(task, n))
    if as_json:
        print_json(report.as_json())
        return
    table = Table(title=f"{report.changed} of {report.replayed} recorded decisions would change")
    for column in (
        "purpose",
        "recipient",
        "allow→deny",
        "deny→allow",
        "tier",
        "granularity",
        "reasons",
    ):
        table.add_column(column)
    for row in report.as_json()["by_purpose_and_recipient"]:
        table.add_row(
            row["purpose"],
            row["recipient"],
            *(
                str(row[k])
                for k in ("allow_to_deny", "deny_to_allow", "tier", "granularity", "reasons")
            ),
        )
    console.print(table)


@app.command("explain")
def explain(
    input_file: Annotated[
        Path | None, typer.Option("--input", help="A policy input (JSON), as in the decision log.")
    ] = None,
    decision: Annotated[
        str | None, typer.Option("--decision", help="Explain a recorded decision by its id.")
    ] = None,
    bundle_dir: Annotated[
        Path | None,
        typer.Option("--bundle", help="Evaluate with this bundle instead of the active revision."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The decision for one input, with its reasons."""
    if (input_file is None) == (decision is None):
        raise BrokerError("give exactly one of --input FILE or --decision ID")
    doc: Any
    if input_file is not None:
        try:
            doc = json.loads(input_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BrokerError(f"--input {input_file}: not a JSON file: {exc}") from exc
        if not isinstance(doc, dict):
            raise BrokerError(f"--input {input_file}: the input must be a JSON object")
    if bundle_dir is not None and decision is None:
        bundle = load_bundle(bundle_dir)
    else:
        with runtime() as rt:
            if decision is not None:
                with rt.db.transaction() as session:
                    row = session.execute(
                        select(DECISIONS.c.input_json).where(DECISIONS.c.decision_id == decision)
                    ).first()
                if row is None:
                    raise BrokerError(f"no recorded decision {decision}")
                doc = json.loads(row[0])
            bundle = (
                load_bundle(bundle_dir)
                if bundle_dir is not None
                else PolicyStore(rt.settings, rt.audit, rt.clock).load_active()
            )
    result = explain_decision(bundle, doc)
    if as_json:
        print_json(result)
        return
    verdict = result["decision"]
    word = "[green]ALLOW[/]" if verdict["allow"] else "[red]DENY[/]"
    console.print(f"{word} (revision {result['revision']})")
    if verdict["allow"]:
        console.print(
            f"tier {verdict['tier']}, granularity {verdict['granularity']}, "
            f"keep at most {verdict['retention_days']} days"
        )
        if verdict["fields_drop"]:
            console.print("drop: " + ", ".join(verdict["fields_drop"]))
        for obligation in verdict["obligations"]:
            console.print(f"obligation: {json.dumps(obligation, sort_keys=True)}")
    for reason in verdict["reasons"]:
        console.print(f"  {reason['code']}: {reason['message']}", highlight=False)


@app.command("activate")
def activate(
    directory: Annotated[Path, typer.Argument(help="The bundle directory to activate.")],
    as_json: JsonFlag = False,
) -> None:
    """Check, test, sign and activate a bundle as the next revision (atomic; audited)."""
    with runtime() as rt:
        store = PolicyStore(rt.settings, rt.audit, rt.clock)
        try:
            with rt.db.transaction() as session:
                activation = store.activate(directory, session, actor())
        except PolicyRejected as exc:
            if exc.check is not None:
                for problem in exc.check.problems:
                    console.print(str(problem), highlight=False)
            raise
    summary = {
        "revision": activation.revision,
        "previous": activation.previous,
        "digest": activation.digest,
        "tests_passed": activation.tests_passed,
        "coverage_percent": activation.coverage_percent,
    }
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"activated revision {activation.revision} ({activation.digest[:19]}…; "
            f"{activation.tests_passed} tests passed; previous: {activation.previous or 'none'})"
        )


@app.command("status")
def status(as_json: JsonFlag = False) -> None:
    """The active revision, the last good one, and every revision kept."""
    settings = load_settings()
    with runtime() as rt:
        store = PolicyStore(settings, rt.audit, rt.clock)
        revisions = store.revisions()
        active = store.active_revision()
        verified = "none"
        if active is not None:
            store.load_active()
            verified = "signature and file hashes verified"
    if as_json:
        print_json({"active": active, "revisions": revisions, "engine": settings.policy_engine})
        return
    console.print(f"active revision: {active or 'none (every release is denied)'} ({verified})")
    console.print(f"engine: {settings.policy_engine}")
    for item in revisions:
        mark = "*" if item["active"] else " "
        console.print(f"{mark} {item['revision']}  {item['digest']}")
