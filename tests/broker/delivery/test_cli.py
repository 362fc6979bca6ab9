"""``broker recipients webhook``, ``broker deliveries`` and ``broker customers erase`` from the
command line (R3.4): a webhook set and removed, the outbox listed, a dead letter redriven, an
erasure that asks first and then withdraws, notifies and crypto-shreds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli.main import app
from broker.delivery.models import DeliveryStatus
from broker.kit.clock import SystemClock
from broker.runtime.core import Runtime, initialise
from broker.runtime.wiring import open_outbox
from broker.settings import load_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "var"
    monkeypatch.setenv("BROKER_DATA_DIR", str(path))
    monkeypatch.delenv("BROKER_DATABASE_URL", raising=False)
    initialise(load_settings(), SystemClock())
    return path


def _run(*args: str, code: int = 0, stdin: str | None = None) -> str:
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exit_code == code, result.output
    return result.output


def test_R3_4_webhook_outbox_and_erasure_from_the_command_line(data_dir: Path) -> None:
    _run("recipients", "register", "acme", "--kind", "third_party")
    _run("recipients", "webhook", "acme", "https://hooks.acme.example/broker")
    assert json.loads(_run("recipients", "show", "acme"))["webhook_url"].endswith("/broker")
    _run("recipients", "webhook", "acme", "http://plain.example/", code=1)  # https only
    _run("recipients", "webhook", "acme", "--remove")
    assert json.loads(_run("recipients", "show", "acme"))["webhook_url"] is None

    rt = Runtime.open(load_settings())
    outbox = open_outbox(rt)
    with rt.db.transaction() as session:
        delivery_id = outbox.enqueue(session, recipient="acme", url="https://h.example/",
                                     kind="release", body=b"{}", media_type="application/json",
                                     subject="CUST-1")  # fmt: skip
        row = outbox.deliveries(session)[0]
        row.status = DeliveryStatus.dead
        session.add(row)
    rt.close()
    (listed,) = json.loads(_run("deliveries", "list", "--status", "dead"))
    assert listed["delivery_id"] == delivery_id
    _run("deliveries", "list", "--status", "weird", code=2)  # a clear usage error, not []
    _run("deliveries", "redrive", delivery_id)
    _run("deliveries", "redrive", delivery_id, code=1)  # no longer a dead letter

    _run("customers", "erase", "CUST-1", stdin="n\n", code=1)  # asks, and "no" erases nothing
    erased = json.loads(_run("customers", "erase", "CUST-1", "--yes"))
    assert erased["data_keys_destroyed"] == 1 and erased["recipients_notified"] == []
