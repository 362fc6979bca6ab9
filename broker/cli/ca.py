"""``broker ca``: the private CA (filled in by the CA work)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The private certificate authority for mutual TLS.", no_args_is_help=True)
