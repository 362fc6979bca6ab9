"""What the OPA engine refuses to be built with: plain http beyond loopback (decisions and the
bearer token would cross the network in clear), TLS options on an http URL, a client key without
its certificate, files that do not exist, URLs with paths; and what it builds from settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigurationError
from connectors.opa.client import Endpoint, OpaServerEngine
from tests.broker.fakes import settings_for


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://opa.example", "https://opa.example:443"),
        ("https://opa.example:8181/", "https://opa.example:8181"),
        ("http://127.0.0.1:8181", "http://127.0.0.1:8181"),
        ("http://localhost:8181", "http://localhost:8181"),
        ("http://[::1]:8181", "http://[::1]:8181"),
        ("http://127.9.9.9", "http://127.9.9.9:80"),
    ],
)
def test_accepted_urls(url: str, expected: str) -> None:
    assert Endpoint.parse(url).url == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://opa.example:8181", "loopback"),
        ("http://10.0.0.5:8181", "loopback"),
        ("ftp://opa.example", "expected https"),
        ("opa.example:8181", "expected https"),
        ("https://opa.example:8181/v1", "scheme, host and port only"),
        ("https://user:pw@opa.example:8181", "scheme, host and port only"),
        ("https://opa.example:99999", "out of range"),
    ],
)
def test_refused_urls(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        OpaServerEngine(url)


def test_tls_options_on_plain_http_are_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read before a connection")
    with pytest.raises(ConfigurationError, match="needs an https URL"):
        OpaServerEngine("http://127.0.0.1:8181", ca_bundle=bundle)


def test_client_key_without_certificate_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("x")
    with pytest.raises(ConfigurationError, match="without its client certificate"):
        OpaServerEngine("https://127.0.0.1:8181", client_key=key)


@pytest.mark.parametrize("option", ["ca_bundle", "client_cert"])
def test_missing_files_are_named(tmp_path: Path, option: str) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigurationError, match=r"nowhere\.pem does not exist"):
        OpaServerEngine("https://127.0.0.1:8181", **{option: missing})  # type: ignore[arg-type]


def test_empty_policy_prefix_is_refused() -> None:
    """An empty prefix would make every module on the server this engine's to delete."""
    with pytest.raises(ConfigurationError, match="prefix"):
        OpaServerEngine("https://opa.example", policy_prefix="")


def test_from_settings_needs_a_url_and_takes_the_rest(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="BROKER_OPA_URL"):
        OpaServerEngine.from_settings(settings_for(tmp_path, policy_engine="opa"))
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    settings = settings_for(
        tmp_path, policy_engine="opa", opa_url="https://opa.internal:8181", opa_ca_bundle=bundle
    )
    engine = OpaServerEngine.from_settings(settings)
    assert (engine.name, engine.endpoint.url) == ("opa", "https://opa.internal:8181")
    engine.close()
