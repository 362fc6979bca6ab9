"""``broker keys``: the key-encryption key and data keys (C1.6, C1.7)."""

from __future__ import annotations

import stat
from typing import Annotated

import typer
from rich.table import Table

from broker.cli.common import actor, console, print_json, runtime
from broker.runtime.core import audit_public_key_path, init_keys, prepare_data_dir, rotate_kek
from broker.settings import load_settings

app = typer.Typer(help="Key management: KEK, data keys, crypto-shredding.", no_args_is_help=True)


@app.command("init")
def init() -> None:
    """Generate the key-encryption key, the subject-hash key and the audit signing key."""
    settings = load_settings()
    prepare_data_dir(settings)
    init_keys(settings)
    console.print(f"keys created in {settings.keys_dir} (mode 0600)")


@app.command("rotate")
def rotate(
    subject: Annotated[
        str | None, typer.Option(help="Rotate this subject's data key instead of the KEK.")
    ] = None,
) -> None:
    """Rotate the KEK (re-wrapping every data key, no data re-encrypted), or one data key."""
    with runtime() as rt:
        if subject is not None:
            with rt.db.transaction() as session:
                ref = rt.data_keys.rotate_subject(session, subject, actor())
            console.print(f"new data key {ref} for {rt.hasher(subject)}")
            return
        done = rotate_kek(rt, actor())
        console.print(
            f"KEK rotated to {done['kek']}: {done['rewrapped']} data keys and "
            f"{done['meter_keys_rewrapped']} meter keys re-wrapped; retired {done['retired']}"
        )


@app.command("destroy")
def destroy(
    subject: Annotated[str, typer.Option(help="The subject (customer reference) to erase.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "erasure request",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Crypto-shred a subject: destroy its data keys; its encrypted data becomes unreadable."""
    if not yes:
        typer.confirm(f"Destroy every data key of {subject}? This cannot be undone", abort=True)
    with runtime() as rt, rt.db.transaction() as session:
        count = rt.data_keys.destroy(session, subject, actor(), reason)
    console.print(f"{count} data key(s) destroyed; the destruction is in the audit log")


@app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show key-encryption keys, data-key counts and the audit verifier key."""
    settings = load_settings()
    with runtime() as rt, rt.db.transaction() as session:
        usage, counts = rt.data_keys.usage_by_kek(session), rt.data_keys.counts(session)
    keks = [
        {"kek_id": k, "current": k == rt.kek.current_kek_id(), "data_keys": usage.get(k, 0)}
        for k in rt.kek.kek_ids()
    ]
    vkey = audit_public_key_path(settings).read_text().strip()
    if as_json:
        print_json({"keks": keks, "data_keys": counts, "audit_verifier_key": vkey})
        return
    table = Table("KEK", "current", "data keys wrapped")
    for k in keks:
        table.add_row(str(k["kek_id"]), "yes" if k["current"] else "", str(k["data_keys"]))
    console.print(table)
    console.print(f"data keys: {counts['live']} live, {counts['destroyed']} destroyed")
    console.print(f"audit verifier key: {vkey}")
    mode = stat.S_IMODE(settings.keys_dir.stat().st_mode)
    console.print(f"key directory: {settings.keys_dir} (mode {mode:o})")
