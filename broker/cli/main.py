"""The ``broker`` command: one Typer app, sub-commands per concern, one error exit path.

Packages outside the product add commands through entry points of the ``broker.commands`` group
(the demo adds ``broker demo``): the product never imports them.

Every expected failure is a ``BrokerError``: it prints ``error: <message>`` on stderr and exits
with the error's code (2 configuration, 3 storage, 4 keys, 1 otherwise); usage errors exit 2.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click
import typer
from rich.console import Console
from typer._click import exceptions as _typer_click

from broker.cli import (
    audit,
    ca,
    consent,
    customers,
    db,
    deliveries,
    keys,
    mdms,
    meters,
    policy,
    privacy,
    recipients,
    retention,
    serve,
)
from broker.errors import BrokerError

COMMANDS = "broker.commands"
"""Commands that packages outside the product add to ``broker`` (entry points of this group)."""

app = typer.Typer(
    name="broker",
    help="Privacy-preserving smart-meter data broker (ITU-T X.1332).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(ca.app, name="ca")
app.add_typer(audit.app, name="audit")
app.add_typer(db.app, name="db")
app.add_typer(meters.app, name="meters")
app.add_typer(customers.app, name="customers")
app.add_typer(mdms.app, name="mdms")
app.add_typer(policy.app, name="policy")
app.add_typer(consent.app, name="consent")
app.add_typer(privacy.app, name="privacy")
app.add_typer(recipients.app, name="recipients")
app.add_typer(deliveries.app, name="deliveries")
app.add_typer(retention.app, name="retention")
app.command("init")(db.init)
app.command("serve")(serve.serve)
for command in entry_points(group=COMMANDS):  # such as ``broker demo``, from the demo package
    app.command(command.name)(command.load())

_stderr = Console(stderr=True, soft_wrap=True)
# typer 0.29 parses with a click of its own (``typer._click``): a bad option value raises its
# exceptions, not click's, so both families are caught (exit 2 with the usage message).
_ABORTS = (click.exceptions.Abort, typer.Abort)
_USAGE_ERRORS = (click.ClickException, _typer_click.ClickException)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (tests call this directly)."""
    try:
        result = app(args=argv, prog_name="broker", standalone_mode=False)
    except BrokerError as exc:
        _stderr.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        return exc.exit_code
    except _ABORTS:
        _stderr.print("aborted")
        return 130
    except _USAGE_ERRORS as exc:
        exc.show()
        return int(exc.exit_code)
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
