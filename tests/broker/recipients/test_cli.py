"""``broker recipients`` (C3.2, R3.3): register, certify a CSR, add a key, suspend, revoke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from broker.ca.authority import role_of
from broker.cli.recipients import app
from broker.kit.clock import SystemClock
from broker.runtime.core import initialise
from broker.settings import load_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "var"
    monkeypatch.setenv("BROKER_DATA_DIR", str(path))
    monkeypatch.delenv("BROKER_DATABASE_URL", raising=False)
    initialise(load_settings(), SystemClock())
    return path


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_C3_2_onboarding_and_cut_off_from_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grid")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    (tmp_path / "grid.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "grid.jwk").write_text(
        json.dumps(ECKey.generate_key("P-256").as_dict(private=False))
    )
    _run("register", "grid", "--kind", "ems", "--purpose", "grid_operations")
    _run(
        "issue-cert",
        "grid",
        "--csr",
        str(tmp_path / "grid.csr"),
        "--out",
        str(tmp_path / "grid.pem"),
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "grid.pem").read_bytes())
    assert role_of(cert) == "ems"
    _run("add-key", "grid", "--jwk", str(tmp_path / "grid.jwk"))
    shown = json.loads(_run("show", "grid"))
    assert shown["kind"] == "ems" and shown["status"] == "active" and len(shown["keys"]) == 1
    _run("suspend", "grid", "--reason", "audit")
    assert "suspended" in _run("list")
    _run("revoke", "grid", "--reason", "ended")
    assert json.loads(_run("show", "grid"))["status"] == "revoked"
