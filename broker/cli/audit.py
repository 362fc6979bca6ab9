"""``broker audit``: checkpoints, export, and offline verification of the audit log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from broker.audit.export import ExportFilters, export_bundle
from broker.audit.verify import verify_bundle
from broker.cli.common import console, runtime
from broker.errors import BrokerError, ConfigurationError
from broker.kit.clock import parse_rfc3339

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


class AuthenticityNotChecked(BrokerError):
    """The export holds together, but no trusted key says who signed it."""


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value if "T" in value else f"{value}T00:00:00Z")
    except ValueError as exc:
        raise ConfigurationError(
            f"{option}: {exc} (use RFC 3339, e.g. 2026-11-24T00:00:00Z)"
        ) from exc


def _key_arg(value: str | None) -> str | None:
    """A verifier key given inline or as a file holding it."""
    if value is None or ("+" in value and not Path(value).exists()):
        return value
    try:
        return Path(value).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"--trusted-key: cannot read {value}: {exc.strerror}") from exc


@app.command("checkpoint")
def checkpoint() -> None:
    """Sign the current tree head and print the checkpoint (C2SP signed note)."""
    with runtime() as rt, rt.db.transaction() as session:
        note = rt.audit.checkpoint(session).note
    print(note, end="")


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="The file to write (JSON lines).")],
    since: Annotated[str | None, typer.Option(help="Entries at or after this time.")] = None,
    until: Annotated[str | None, typer.Option(help="Entries before this time.")] = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", help="Event type (repeatable).")
    ] = None,
    from_checkpoint: Annotated[
        Path | None, typer.Option(help="An earlier checkpoint: add a consistency proof from it.")
    ] = None,
) -> None:
    """Export entries with inclusion proofs, the signed checkpoint and the public key."""
    filters = ExportFilters(_time(since, "--since"), _time(until, "--until"), tuple(types or ()))
    earlier = from_checkpoint.read_text() if from_checkpoint else None
    with runtime() as rt, rt.db.transaction() as session:
        summary = export_bundle(session, rt.audit, out, filters, earlier)
    console.print(f"exported {summary.entries} entries (tree size {summary.tree_size}) to {out}")


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="An export written by `broker audit export`.")],
    trusted_key: Annotated[
        str | None, typer.Option(help="The log's verifier key, or a file holding it.")
    ] = None,
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            "--allow-unpinned",
            help="Without --trusted-key, check integrity only and exit 0 (authenticity unchecked).",
        ),
    ] = False,
) -> None:
    """Verify an export offline; exit 0 when everything holds, non-zero naming the first failure.
    Without --trusted-key nothing says who signed the file: exit non-zero unless
    --allow-unpinned."""
    report = verify_bundle(file, _key_arg(trusted_key))
    print(report.summary())
    if not report.key_pinned and not allow_unpinned:
        raise AuthenticityNotChecked(
            "authenticity not checked: the export verifies only against the key it carries; "
            "pass --trusted-key with the log's verifier key (var/keys/audit-signing.pub), or "
            "--allow-unpinned to accept an integrity check alone"
        )
