"""``broker consent`` as an operator runs it (R3.4): give, list, show, modify, withdraw, expire,
receipts checked with the broker's public key, the chain check naming an edited event, bad
input refused with nothing written, and the receipt key made for data directories older than
the ledger."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from broker.cli.main import main


def _consent(*argv: str) -> int:
    return main(["consent", *argv])


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert _consent(*argv, "--json") == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _fails(capsys: pytest.CaptureFixture[str], code: int, *argv: str) -> str:
    capsys.readouterr()
    assert _consent(*argv) == code
    return capsys.readouterr().err


@pytest.fixture
def notice(tmp_path: Path) -> Path:
    path = tmp_path / "notice.txt"
    path.write_text("Acme Energy receives your hourly consumption to give you saving tips.\n")
    return path


@pytest.fixture
def initialised(data_dir: Path) -> Path:
    """An initialised data directory with customers C-1 to C-3 and recipient acme-energy."""
    assert main(["init"]) == 0
    customers = data_dir / "customers.csv"
    customers.write_text(
        "customer_ref,name,address,account_number\n"
        + "".join(f"C-{n},Name {n},{n} High Street,AC-{n}\n" for n in (1, 2, 3))
    )
    assert main(["customers", "import", str(customers)]) == 0
    register = ["recipients", "register", "acme-energy", "--kind", "third_party"]
    assert main([*register, "--purpose", "personalised_service"]) == 0
    return data_dir


def _give_args(notice: Path, *extra: str) -> list[str]:
    return [
        "give",
        "--customer",
        "C-1",
        "--recipient",
        "acme-energy",
        "--purpose",
        "personalised_service",
        "--purpose",
        "energy_efficiency_research",
        "--category",
        "consumption",
        "--granularity",
        "hourly",
        "--explicit",
        "--days",
        "30",
        "--notice",
        str(notice),
        *extra,
    ]


def test_R3_4_give_list_show_and_withdraw(
    initialised: Path, notice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = tmp_path / "receipt.jws"
    given = _json(capsys, *_give_args(notice, "--receipt-out", str(receipt)))
    consent_id = given["consent_id"]
    assert (given["kind"], given["seq"]) == ("given", 1)
    assert given["terms"]["purposes"] == ["energy_efficiency_research", "personalised_service"]
    assert given["terms"]["notice_hash"].startswith("sha256:")
    assert receipt.read_text().strip() == given["receipt"]
    claims = _json(capsys, "receipt", "verify", str(receipt))
    assert (claims["consent_id"], claims["event_hash"]) == (consent_id, given["hash"])

    listed = _json(capsys, "list", "--customer", "C-1")
    assert [(c["terms"]["consent_id"], c["status"]) for c in listed] == [(consent_id, "active")]
    assert _json(capsys, "list", "--recipient", "other-energy") == []

    withdrawn = _json(capsys, "withdraw", consent_id)
    assert (withdrawn["kind"], withdrawn["seq"]) == ("withdrawn", 2)
    assert _json(capsys, "list") == []
    assert [c["status"] for c in _json(capsys, "list", "--all")] == ["withdrawn"]
    history = _json(capsys, "show", consent_id)
    assert [e["kind"] for e in history] == ["given", "withdrawn"]
    assert _consent("show", consent_id) == 0
    assert "personalised_service" in capsys.readouterr().out


def test_modify_and_expire_from_the_cli(
    initialised: Path, notice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    consent_id = _json(capsys, *_give_args(notice))["consent_id"]
    modified = _json(
        capsys, "modify", consent_id, "--granularity", "daily", "--pseudonymous", "--days", "60"
    )
    assert (modified["kind"], modified["terms"]["granularity"]) == ("modified", "daily")
    assert _json(capsys, "expire") == []  # nothing is due yet
    assert _consent("expire") == 0
    assert "0 consent(s) expired" in capsys.readouterr().out


def test_R3_4_a_tampered_receipt_or_another_key_is_refused(
    initialised: Path, notice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _json(capsys, *_give_args(notice))["receipt"]
    header, payload, signature = token.split(".")
    forged = tmp_path / "forged.jws"
    forged.write_text(".".join([header, payload[:-2] + "AA", signature]))
    err = _fails(capsys, 6, "receipt", "verify", str(forged))
    assert "error: receipt signature does not verify" in err
    real = tmp_path / "real.jws"
    real.write_text(token)
    other = tmp_path / "other.pub"
    other.write_bytes((initialised / "keys" / "audit-signing.pub").read_bytes())
    assert "not an Ed25519 public key" in _fails(
        capsys, 6, "receipt", "verify", str(real), "--public-key", str(other)
    )
    capsys.readouterr()
    assert _consent("receipt", "key", "--jwk") == 0
    jwk_file = tmp_path / "broker.jwk"
    jwk_file.write_text(capsys.readouterr().out)
    claims = _json(capsys, "receipt", "verify", str(real), "--public-key", str(jwk_file))
    assert claims["kind"] == "given"


def test_R3_4_verify_names_the_event_edited_in_the_database(
    initialised: Path, notice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for customer in ("C-1", "C-2", "C-3"):
        _json(capsys, *_give_args(notice)[:2], customer, *_give_args(notice)[3:])
    assert _json(capsys, "verify") == {"events": 3, "first_bad_seq": None, "problem": None}
    with sqlite3.connect(initialised / "broker.db") as conn:
        conn.execute(
            "UPDATE consent_event SET body = replace(body, '\"hourly\"', '\"15min\"') WHERE seq = 2"
        )
    err = _fails(capsys, 5, "verify")
    assert "error: consent ledger broken at event 2: hash does not match the body" in err


def _audit_entries(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "broker.db") as conn:
        return int(conn.execute("SELECT count(*) FROM audit_entry").fetchone()[0])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--purpose", "reselling"], "unknown purpose 'reselling'"),
        (["--category", "bank_details"], "unknown category 'bank_details'"),
        (["--granularity", "1min"], "unknown granularity '1min'"),
        (["--days", "400"], "more than 365 days after"),
        (["--days", "0"], "is not after"),
        (["--history-days", "-5"], "history days must be 0 to 3660, not -5"),
    ],
    ids=["purpose", "category", "granularity", "too_long", "expired", "history"],
)
def test_R3_4_bad_input_is_refused_and_writes_nothing(
    initialised: Path,
    notice: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    audited = _audit_entries(initialised)
    err = _fails(capsys, 1, *_give_args(notice), *extra)
    assert message in err and err.startswith("error: consent cn_")
    assert _json(capsys, "list", "--all") == []
    assert _audit_entries(initialised) == audited


def test_operations_on_unknown_or_closed_consents_are_clear_errors(
    initialised: Path, notice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "error: no consent cn_nope" in _fails(capsys, 1, "withdraw", "cn_nope")
    assert "error: no consent cn_nope" in _fails(capsys, 1, "show", "cn_nope")
    consent_id = _json(capsys, *_give_args(notice))["consent_id"]
    assert f"modification of {consent_id} changes nothing" in _fails(
        capsys, 1, "modify", consent_id
    )
    assert _consent("withdraw", consent_id) == 0
    assert "was withdrawn at" in _fails(capsys, 1, "withdraw", consent_id)
    assert "was withdrawn at" in _fails(capsys, 1, "modify", consent_id, "--history-days", "3")
    missing = _fails(capsys, 2, *_give_args(Path("/nonexistent/notice.txt")))
    assert "--notice: cannot read /nonexistent/notice.txt" in missing


def test_an_older_data_directory_gets_a_receipt_key_on_first_use(
    initialised: Path, notice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = initialised / "keys"
    assert stat.S_IMODE((keys / "consent-receipt.key").stat().st_mode) == 0o600
    (keys / "consent-receipt.key").unlink()
    (keys / "consent-receipt.pub").unlink()
    token = _json(capsys, *_give_args(notice))["receipt"]
    assert stat.S_IMODE((keys / "consent-receipt.key").stat().st_mode) == 0o600
    assert (keys / "consent-receipt.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    receipt = initialised / "r.jws"
    receipt.write_text(token)
    assert _json(capsys, "receipt", "verify", str(receipt))["seq"] == 1


def test_validity_defaults_to_the_configured_maximum(
    initialised: Path,
    notice: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_CONSENT_MAX_DAYS", "20")
    without_days = [arg for arg in _give_args(notice) if arg not in ("--days", "30")]
    given = _json(capsys, *without_days)
    expires = dt.datetime.fromisoformat(given["terms"]["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(days=19) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=20)
    assert "more than 20 days after" in _fails(capsys, 1, *_give_args(notice))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--customer", "C-404", "unknown customer 'C-404'"),
        ("--recipient", "nobody-co", "unregistered recipient 'nobody-co'"),
    ],
    ids=["customer", "recipient"],
)
def test_R3_4_a_consent_naming_an_unknown_party_is_refused_and_signs_nothing(
    initialised: Path,
    notice: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    message: str,
) -> None:
    """R3.4, C3.2: a receipt is evidence a customer consented to a registered recipient; one
    for a customer the broker does not hold, or for a recipient it never registered, is
    refused by the consent service (so the portal and every other path refuse it too)."""
    args = _give_args(notice, "--receipt-out", str(tmp_path / "receipt.jws"))
    args[args.index(option) + 1] = value
    audited = _audit_entries(initialised)
    err = _fails(capsys, 1, *args)
    assert message in err
    assert not (tmp_path / "receipt.jws").exists()
    assert _json(capsys, "list", "--all") == []
    assert _audit_entries(initialised) == audited


def test_R3_4_a_consent_to_a_revoked_recipient_is_refused(
    initialised: Path, notice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """C3.2: a revoked recipient is cut off for good; no new consent may name it."""
    assert main(["recipients", "revoke", "acme-energy", "--reason", "contract ended"]) == 0
    assert "recipient 'acme-energy' is revoked" in _fails(capsys, 1, *_give_args(notice))
    assert _json(capsys, "list", "--all") == []
