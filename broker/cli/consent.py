"""``broker consent``: the consent ledger as an operator or a privacy officer uses it (R3.4).

Consents are given, modified and withdrawn here for customers who consented on paper or by
phone (the OAuth consent page comes with the customer portal); each command appends one event,
enters it in the audit log and hands back the customer's signed receipt. ``verify`` checks the
stored chain; ``receipt verify`` checks a receipt with the broker's public key and needs no
database, so a customer or regulator can run it anywhere.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from broker.cli.common import actor, console, print_json, runtime
from broker.consent.errors import ConsentLedgerBroken, refusals
from broker.consent.service import Appended
from broker.errors import ConfigurationError
from broker.kit.clock import to_rfc3339
from broker.runtime.core import consent_receipt_public_key_path
from broker.runtime.wiring import load_receipt_signer, open_consents
from broker.settings import load_settings
from consent_ledger import (
    GRANULARITY_S,
    ConsentChanges,
    ConsentEvent,
    ConsentRecord,
    ConsentRequest,
    load_public_key,
    notice_hash,
    verify_receipt,
)
from consent_ledger.terms import terms_to_json

app = typer.Typer(help="The consent ledger: give, withdraw, list, verify.", no_args_is_help=True)
receipt_app = typer.Typer(help="Consent receipts (signed JWS).", no_args_is_help=True)
app.add_typer(receipt_app, name="receipt")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ReceiptOut = Annotated[
    Path | None, typer.Option("--receipt-out", help="Also write the signed receipt to this file.")
]
ConsentId = Annotated[str, typer.Argument(help="The consent id (cn_...).")]
_GRANULARITIES = ", ".join(GRANULARITY_S)


def _notice(path: Path) -> str:
    try:
        return notice_hash(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"--notice: cannot read {path}: {exc.strerror}") from exc


def _emit(appended: Appended, as_json: bool, receipt_out: Path | None) -> None:
    event, receipt = appended.event, appended.receipt  # signed now, after the commit
    if receipt_out is not None:
        receipt_out.write_text(receipt + "\n")
    if as_json:
        print_json({**_event_json(event), "receipt": receipt})
        return
    console.print(f"consent {event.consent_id} {event.kind} (event {event.seq})")
    console.print(f"receipt: {receipt}", highlight=False)


def _event_json(event: ConsentEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "consent_id": event.consent_id,
        "kind": event.kind.value,
        "at": to_rfc3339(event.at),
        "actor": event.actor,
        "hash": event.hash.hex(),
        "terms": None if event.terms is None else terms_to_json(event.terms),
    }


@app.command("give")
def give(
    customer: Annotated[str, typer.Option(help="The customer reference.")],
    recipient: Annotated[
        str, typer.Option(help="Who may receive the data (its certificate name).")
    ],
    purpose: Annotated[list[str], typer.Option(help="A purpose consented to (repeatable).")],
    category: Annotated[list[str], typer.Option(help="A data category (repeatable).")],
    notice: Annotated[Path, typer.Option(help="The notice text shown to the customer (hashed).")],
    granularity: Annotated[
        str, typer.Option(help=f"The finest granularity allowed: {_GRANULARITIES}.")
    ] = "daily",
    history_days: Annotated[
        int, typer.Option(help="How many days before today released data may reach back.")
    ] = 0,
    identified: Annotated[
        bool,
        typer.Option(
            "--identified/--pseudonymous",
            help="May the data name the customer? A feed naming the customer needs --identified; "
            "a pseudonymous customer is served in population releases only.",
        ),
    ] = False,
    explicit: Annotated[
        bool, typer.Option("--explicit", help="Given by an explicit opt-in action.")
    ] = False,
    days: Annotated[
        int | None,
        typer.Option(help="Days the consent is valid [default: BROKER_CONSENT_MAX_DAYS, 365]."),
    ] = None,
    collection_method: Annotated[
        str, typer.Option(help="How it was collected (cli, paper, phone...).")
    ] = "cli",
    controller: Annotated[str, typer.Option(help="The data controller named in it.")] = "utility",
    receipt_out: ReceiptOut = None,
    as_json: JsonFlag = False,
) -> None:
    """Record a consent the customer gave; prints its id and the customer's signed receipt."""
    with runtime() as rt, rt.db.transaction() as session:
        request = ConsentRequest(
            customer=customer,
            recipient=recipient,
            purposes=purpose,
            categories=category,
            granularity=granularity,
            expires_at=rt.clock.now()
            + timedelta(days=rt.settings.consent_max_days if days is None else days),
            notice_hash=_notice(notice),
            collection_method=collection_method,
            controller=controller,
            history_days=history_days,
            identified=identified,
            explicit=explicit,
        )
        appended = open_consents(rt).give(session, request, actor())
    _emit(appended, as_json, receipt_out)


@app.command("modify")
def modify(
    consent_id: ConsentId,
    purpose: Annotated[
        list[str] | None, typer.Option(help="Replace the purposes (repeatable).")
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Replace the data categories (repeatable).")
    ] = None,
    granularity: Annotated[
        str | None, typer.Option(help=f"Replace the finest granularity: {_GRANULARITIES}.")
    ] = None,
    history_days: Annotated[int | None, typer.Option(help="Replace the history window.")] = None,
    identified: Annotated[
        bool | None,
        typer.Option("--identified/--pseudonymous", help="Replace identified or pseudonymous."),
    ] = None,
    explicit: Annotated[
        bool | None, typer.Option("--explicit/--not-explicit", help="Replace the opt-in flag.")
    ] = None,
    days: Annotated[int | None, typer.Option(help="Valid for this many days from now.")] = None,
    notice: Annotated[Path | None, typer.Option(help="The new notice text shown.")] = None,
    collection_method: Annotated[str | None, typer.Option(help="How it was collected.")] = None,
    receipt_out: ReceiptOut = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a consent's scope or validity (the customer and recipient stay)."""
    with runtime() as rt, rt.db.transaction() as session:
        changes = ConsentChanges(
            purposes=purpose,
            categories=category,
            granularity=granularity,
            history_days=history_days,
            identified=identified,
            explicit=explicit,
            expires_at=None if days is None else rt.clock.now() + timedelta(days=days),
            notice_hash=None if notice is None else _notice(notice),
            collection_method=collection_method,
        )
        appended = open_consents(rt).modify(session, consent_id, changes, actor())
    _emit(appended, as_json, receipt_out)


@app.command("withdraw")
def withdraw(
    consent_id: ConsentId, receipt_out: ReceiptOut = None, as_json: JsonFlag = False
) -> None:
    """Withdraw a consent: it covers nothing from the next decision on."""
    with runtime() as rt, rt.db.transaction() as session:
        appended = open_consents(rt).withdraw(session, consent_id, actor())
    _emit(appended, as_json, receipt_out)


@app.command("expire")
def expire(as_json: JsonFlag = False) -> None:
    """Record an expiry event for every consent past its expiry (decisions already deny)."""
    with runtime() as rt, rt.db.transaction() as session:
        done = open_consents(rt).expire_due(session, actor())
    if as_json:
        print_json([_event_json(appended.event) for appended in done])
        return
    console.print(f"{len(done)} consent(s) expired")


@app.command("list")
def list_(
    customer: Annotated[str | None, typer.Option(help="Only this customer's consents.")] = None,
    recipient: Annotated[str | None, typer.Option(help="Only consents to this recipient.")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Also withdrawn and expired consents.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Consents in force now (with --all, every consent ever given)."""
    with runtime() as rt, rt.db.transaction() as session:
        records = open_consents(rt).consents(session, customer, recipient, everything)
    if as_json:
        print_json([_record_json(record) for record in records])
        return
    table = Table("consent", "customer", "recipient", "purposes", "finest", "status", "expires")
    for r in records:
        t = r.terms
        purposes = ",".join(t.purposes)
        expiry = to_rfc3339(t.expires_at)
        table.add_row(
            t.consent_id, t.customer, t.recipient, purposes, t.granularity, r.status, expiry
        )
    console.print(table)


def _record_json(record: ConsentRecord) -> dict[str, Any]:
    return {
        "status": record.status.value,
        "last_seq": record.last_seq,
        "updated_at": to_rfc3339(record.updated_at),
        "terms": terms_to_json(record.terms),
    }


@app.command("show")
def show(consent_id: ConsentId, as_json: JsonFlag = False) -> None:
    """A consent's history: every event, in order, with its hash."""
    with runtime() as rt, rt.db.transaction() as session:
        events = open_consents(rt).history(session, consent_id)
    if as_json:
        print_json([_event_json(event) for event in events])
        return
    table = Table("seq", "kind", "at", "actor", "hash")
    for e in events:
        table.add_row(str(e.seq), e.kind.value, to_rfc3339(e.at), e.actor, e.hash.hex()[:16])
    console.print(table)
    last_terms = next(e.terms for e in reversed(events) if e.terms is not None)
    for key, value in terms_to_json(last_terms).items():
        console.print(f"{key}: {value}", highlight=False)


@app.command("verify")
def verify(as_json: JsonFlag = False) -> None:
    """Check every stored event's hash, link and audit entry; exit 5 naming the first bad one."""
    with runtime() as rt, rt.db.transaction() as session:
        report = open_consents(rt).verify(session)
    if as_json:
        print_json(
            {
                "events": report.events,
                "first_bad_seq": report.first_bad_seq,
                "problem": report.problem,
            }
        )
    if report.first_bad_seq is not None:
        raise ConsentLedgerBroken(
            f"consent ledger broken at event {report.first_bad_seq}: {report.problem}"
        )
    if not as_json:
        console.print(f"consent ledger intact: {report.events} events")


@receipt_app.command("verify")
def receipt_verify(
    token_file: Annotated[Path, typer.Argument(help="A file holding the receipt (compact JWS).")],
    public_key: Annotated[
        Path | None,
        typer.Option(help="The broker's receipt public key, PEM or JWK (default: the data dir's)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a receipt's signature with the broker's public key and print what it asserts."""
    key_path = public_key or consent_receipt_public_key_path(load_settings())
    try:
        token, key_data = token_file.read_text(), key_path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    with refusals():
        claims = verify_receipt(token, load_public_key(key_data))
    if as_json:
        print_json(claims)
        return
    console.print(f"receipt valid: consent {claims['consent_id']} {claims['kind']}")
    for key in sorted(claims):
        console.print(f"{key}: {claims[key]}", highlight=False)


@receipt_app.command("key")
def receipt_key(
    jwk: Annotated[bool, typer.Option("--jwk", help="Print a JWK instead of PEM.")] = False,
) -> None:
    """Print the public key that verifies receipts, to hand to customers."""
    signer = load_receipt_signer(load_settings())
    if jwk:
        print_json(signer.public_jwk())
        return
    print(signer.public_pem().decode("ascii"), end="")
