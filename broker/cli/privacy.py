"""``broker privacy``: the privacy and utility report, pseudonym re-keying, budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker.assurance.population import SEED
from broker.assurance.report import PLOT, REPORT, run
from broker.cli.common import actor, console, print_json, runtime
from broker.privacy.service import BudgetLedger, PseudonymKeys, load_pseudonym_master

app = typer.Typer(
    help="De-identification: report, pseudonym keys, privacy budgets.", no_args_is_help=True
)


@app.command("report")
def report(
    out: Annotated[Path, typer.Option(help="Where to write the JSON and the plot.")] = Path(
        "privacy-report"
    ),
    households: Annotated[
        int,
        typer.Option(min=100, max=200_000, help="Households drawn from the demo fleet's model."),
    ] = 10_000,
    linkage_households: Annotated[
        int, typer.Option(min=50, max=20_000, help="Households in the linkage attack.")
    ] = 1_200,
    seed: Annotated[int, typer.Option(help="The fleet's seed (the demo's by default).")] = SEED,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Error of each tier's aggregates against the truth (by group size and ε), k reached, a
    linkage attack per tier, and attacks by recipients who pool what they receive (against
    per-request cells and canonical cells), on the demo fleet grown from its own load model."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("drawing households", total=None)
        body = run(
            out,
            households,
            seed,
            linkage_households,
            lambda step: progress.update(task, description=step),
        )
    if as_json:
        print_json(body)
        return
    table = Table(title="dp tier: MAPE of quarter-hour group sums (%)")
    table.add_column("households per group")
    mape = body["utility"]["dp_mape_percent"]
    epsilons = sorted({e for row in mape.values() for e in row}, key=float)
    for epsilon in epsilons:
        table.add_column(f"ε = {epsilon}")
    for size, row in mape.items():
        table.add_row(size, *(f"{row[e]:.2f}" for e in epsilons))
    console.print(table)
    links = Table(title="linkage attack between two weeks (nearest neighbour on habits)")
    links.add_column("tier")
    links.add_column("accuracy")
    links.add_column("note")
    for tier, result in body["privacy"]["linkage_accuracy"].items():
        accuracy = "n/a" if result["accuracy"] is None else f"{result['accuracy']:.2%}"
        links.add_row(tier, accuracy, result.get("note", ""))
    console.print(links)
    general = body["privacy"]["generalised"]
    console.print(
        f"generalised tier: k reached {general['k_reached']}, "
        f"{general['suppressed']} households suppressed"
    )
    console.print(_attacks_table(body["attacks"]))
    console.print(f"linkage after a re-key: {body['attacks']['linkage_after_rekey']['note']}")
    console.print(f"wrote {out / REPORT} and {out / PLOT}")


def _attacks_table(attacks: dict[str, Any]) -> Table:
    """The attacks of recipients who pool what they receive, with the report's exact figures:
    per-request cells ("before") and canonical cells ("now")."""
    setup = attacks["setup"]
    feeders = ", ".join(f"{f} {n}" for f, n in setup["households_per_feeder"].items())
    table = Table(
        title="attacks by recipients pooling what they receive: before (per request) and now "
        f"(canonical cells), on {setup['substation']} ({feeders} households), {setup['day']}"
    )
    for column in ("attack", "figure", "before", "now"):
        table.add_column(column)
    diff = attacks["cross_recipient_differencing"]
    b, n = diff["before"], diff["now"]
    table.add_row(
        f"differencing after an erasure ({diff['feeder']} less {diff['erased']})",
        f"household's quarter-hours recovered (of {b['cells_released_to_both']})",
        str(b["cells_recovered"]),
        str(n["cells_recovered"]),
    )
    table.add_row(
        "",
        "max |A-B - household| (Wh)",
        _n(b["max_abs_error_wh"]),
        _n(n["max_abs_error_wh"]),
    )
    table.add_row(
        "", "max |A-B| (Wh)", _n(b["max_abs_a_minus_b_wh"]), _n(n["max_abs_a_minus_b_wh"])
    )
    table.add_row(
        "",
        "cells without it refused (members apart)",
        f"{_yes(b['differencing_refused'])} ({b['member_difference']}, per recipient)",
        f"{_yes(n['differencing_refused'])} ({n['member_difference']}, any recipient)",
    )
    grain = attacks["cross_granularity_recovery"]
    b, n = grain["before"], grain["now"]
    table.add_row(
        "withheld cells from every granularity",
        "withheld cells recovered (max error Wh)",
        f"{b['recovered']} of {b['withheld_cells']} ({_n(b['max_abs_error_wh'])})",
        f"{n['recovered']} of {n['withheld_cells']}",
    )
    for seconds, share in sorted(grain["released_share"].items(), key=lambda kv: int(kv[0])):
        table.add_row(
            "",
            f"feeder cells released, {seconds} s",
            _n(share["before"]),
            _n(share["now"]),
        )
    avg = attacks["averaging_two_registrations"]
    b, n = avg["before"], avg["now"]
    table.add_row(
        f"averaging two dp registrations (ε = {avg['epsilon']:g}, {avg['interval_s']} s)",
        "RMSE of average / of one",
        _n(b["ratio"]),
        _n(n["ratio"]),
    )
    table.add_row("", "ε spent per household-day", _n(b["epsilon_spent"]), _n(n["epsilon_spent"]))
    table.add_row("", "noise draws", str(b["draws"]), str(n["draws"]))
    link = attacks["linkage_after_rekey"]
    table.add_row(
        f"linkage after a pseudonym re-key ({link['households']} households)",
        "re-linked by habits (chance)",
        f"{_n(link['before']['relinked'])} ({link['chance']})",
        f"{_n(link['now']['relinked'])} ({link['chance']})",
    )
    return table


def _n(value: float | None) -> str:
    """A figure exactly as the report holds it."""
    return "n/a" if value is None else repr(value)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


@app.command("rekey")
def rekey(
    domain: Annotated[str, typer.Option(help="The recipient's pseudonym domain.")],
) -> None:
    """Give a recipient's domain a new pseudonym key. The identifiers change, but each
    household's load profile stays a fingerprint: habits link many new pseudonyms to the old
    ones (`broker privacy report` measures the rate)."""
    with runtime() as rt, rt.db.transaction() as session:
        keys = PseudonymKeys(load_pseudonym_master(rt.settings), rt.audit, rt.clock)
        key = keys.rekey(session, domain, actor())
    console.print(f"domain {domain} now at pseudonym key version {key.version}.")
    console.print(
        "New identifiers only: the data's habits still link many households to their old "
        "pseudonyms (broker privacy report measures the rate); it stays personal data."
    )


@app.command("budget")
def budget(
    recipient: Annotated[str, typer.Option(help="The recipient whose budget to show.")],
    days: Annotated[int, typer.Option(min=1, max=366, help="Rolling window in days.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The ε a recipient's requests drew in the window. The cap is kept per cell (the
    household-days of a substation and day), whoever draws on it; recorded noisy values are
    served again at no cost."""
    with runtime() as rt, rt.db.transaction() as session:
        rows = BudgetLedger(rt.audit, rt.clock).window(session, recipient, days)
    spent = sum(row["epsilon"] for row in rows)
    if as_json:
        print_json(
            {"recipient": recipient, "days": days, "epsilon_spent": spent, "releases": len(rows)}
        )
        return
    console.print(f"{recipient}: ε {spent:g} drawn in {len(rows)} new draws over {days} days")
