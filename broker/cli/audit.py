"""``broker audit``: export and offline verification of the audit log (filled in by the audit work)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
