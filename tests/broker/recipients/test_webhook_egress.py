"""Webhook URLs that would make the broker post to itself, its network or the cloud metadata
service are refused at registration, in every spelling the resolver accepts (R3.1, C3.2): over
the real HTTPS API (mutual TLS, an operator certificate) and from ``broker recipients``. The
refusal names the address reached and stores nothing; loopback and private webhooks are an
explicit operator setting limited to a port allow-list."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.kit.clock import SystemClock
from broker.runtime.core import initialise
from broker.settings import load_settings
from tests.broker.oauth.conftest import Broker
from tests.broker.recipients.test_api import _operator

pytestmark = pytest.mark.timeout(120)

NON_CANONICAL = [
    "https://[::ffff:169.254.169.254]/hook",  # IPv4-mapped IPv6
    "https://[::ffff:a9fe:a9fe]/hook",  # IPv4-mapped IPv6, hex
    "https://2852039166/hook",  # decimal
    "https://0xA9FEA9FE/hook",  # hex
    "https://0251.0376.0251.0376/hook",  # octal
    "https://localhost./hook",  # trailing dot
    "https://127.0.0.1./hook",  # trailing dot
    "https://127.1/hook",  # two parts
    "https://169.254.43518/hook",  # two parts
    "https://2130706433:8443/hook",  # decimal loopback, the one the worker dialled
    "https://0x7f.1/hook",
    "https://[::7f00:1]/hook",  # IPv4-compatible IPv6
    "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of the metadata address
    "https://[2002:a9fe:a9fe::1]/hook",  # 6to4 of the metadata address
]
"""Link-local and loopback addresses written so that a check of the canonical text misses them."""
PLAIN = [
    "https://127.0.0.1:9443/hook",
    "https://localhost/hook",
    "https://a.localhost/hook",
    "https://[::1]/hook",
    "https://10.0.0.5/hook",
    "https://192.168.1.2/hook",
    "https://[fd00::5]/hook",
    "https://100.64.0.1/hook",  # shared address space (CGNAT)
    "https://169.254.169.254/hook",
    "https://[fe80::1]/hook",
    "https://0.0.0.0/hook",
    "https://224.0.0.1/hook",
    "https://255.255.255.255/hook",
    "https://127.0.0.1.5/hook",  # ends in a number but is no address: refused, not looked up
]
"""Loopback, private and link-local addresses in their ordinary spelling."""


@pytest.mark.parametrize("url", NON_CANONICAL + PLAIN)
def test_R3_1_the_api_refuses_webhooks_that_reach_internal_addresses(
    broker: Broker, url: str
) -> None:
    """Registration over mutual TLS answers 400 InvalidRecipient naming the refusal, and no
    recipient is stored (production settings: no private webhooks)."""
    body = {"recipient_id": "newco", "display_name": "NewCo", "kind": "supplier",
            "webhook_url": url}  # fmt: skip
    with broker.client(_operator(broker)) as client:
        answer = client.post("/v1/recipients", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "InvalidRecipient"
        assert "webhook" in answer.json()["detail"] and "refused" in answer.json()["detail"]
        assert client.get("/v1/recipients").json() == []


def test_R3_1_the_api_still_registers_a_public_webhook(broker: Broker) -> None:
    body = {"recipient_id": "newco", "display_name": "NewCo", "kind": "supplier",
            "webhook_url": "https://hooks.newco.example/hook"}  # fmt: skip
    with broker.client(_operator(broker)) as client:
        answer = client.post("/v1/recipients", json=body)
        assert answer.status_code == 201, answer.text
        assert answer.json()["webhook_url"] == body["webhook_url"]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "var"
    monkeypatch.setenv("BROKER_DATA_DIR", str(path))
    monkeypatch.delenv("BROKER_DATABASE_URL", raising=False)
    for name in ("BROKER_WEBHOOK_ALLOW_PRIVATE", "BROKER_WEBHOOK_PRIVATE_PORTS"):
        monkeypatch.delenv(name, raising=False)
    initialise(load_settings(), SystemClock())
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """``broker <args>`` through the command's one entry point: (exit code, stdout + stderr)."""

    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def _stored(cli: Callable[..., tuple[int, str]], name: str) -> object:
    code, out = cli("recipients", "show", name)
    assert code == 0, out
    return json.loads(out)["webhook_url"]


@pytest.mark.parametrize("url", NON_CANONICAL + PLAIN)
def test_R3_1_the_cli_refuses_webhooks_that_reach_internal_addresses(
    data_dir: Path, cli: Callable[..., tuple[int, str]], url: str
) -> None:
    """``broker recipients webhook`` and ``register --webhook`` fail with a clear message and
    leave nothing stored."""
    assert cli("recipients", "register", "acme", "--kind", "third_party")[0] == 0
    code, out = cli("recipients", "webhook", "acme", url)
    assert code == 1 and "refused" in out, out
    assert _stored(cli, "acme") is None
    code, out = cli("recipients", "register", "other", "--kind", "supplier", "--webhook", url)
    assert code == 1 and "refused" in out, out
    assert cli("recipients", "show", "other")[0] == 1  # not registered


def test_R3_1_private_webhooks_are_an_explicit_setting_limited_to_ports(
    data_dir: Path, cli: Callable[..., tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With BROKER_WEBHOOK_ALLOW_PRIVATE a loopback or private webhook is accepted on a port of
    BROKER_WEBHOOK_PRIVATE_PORTS only; link-local (metadata) addresses stay refused."""
    assert cli("recipients", "register", "acme", "--kind", "third_party")[0] == 0
    assert cli("recipients", "webhook", "acme", "https://127.0.0.1:9443/hook")[0] == 1
    monkeypatch.setenv("BROKER_WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("BROKER_WEBHOOK_PRIVATE_PORTS", "[9443]")
    for url in ("https://127.0.0.1:9443/hook", "https://[fd00::5]:9443/h", "https://127.1:9443/"):
        assert cli("recipients", "webhook", "acme", url)[0] == 0, url
        assert _stored(cli, "acme") == url
    for url in ("https://127.0.0.1:9444/hook", "https://10.0.0.5/hook",
                "https://169.254.169.254:9443/", "https://[::ffff:a9fe:a9fe]:9443/"):  # fmt: skip
        code, out = cli("recipients", "webhook", "acme", url)
        assert code == 1 and "refused" in out, (url, out)
    assert _stored(cli, "acme") == "https://127.1:9443/"
