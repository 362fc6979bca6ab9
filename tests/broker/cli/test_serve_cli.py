"""``python -m broker serve`` as an operator starts it: a real process on loopback, mTLS only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from broker.api.tls import client_context
from broker.cli.main import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


START_DEADLINE_S = 180.0  # a bound on a hang, not on speed: a loaded machine starts slowly
HTTP_TIMEOUT_S = 30.0


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"broker serve exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"broker serve did not listen within {START_DEADLINE_S:g} s")


def test_C3_2_broker_serve_admits_only_ca_certificates(data_dir: Path) -> None:
    assert main(["init"]) == 0
    assert main(["ca", "issue", "--role", "regulator", "--name", "energy-regulator"]) == 0
    port, portal = _free_port(), _free_port()
    env = {**os.environ, "BROKER_DATA_DIR": str(data_dir)}
    cmd = [
        sys.executable,
        "-m",
        "broker",
        "serve",
        "--port",
        str(port),
        "--portal-port",
        str(portal),
    ]
    log = data_dir.parent / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(port, process)
        issued, ca_pem = data_dir / "ca" / "issued", data_dir / "ca" / "ca.pem"
        ctx = client_context(
            ca_pem, issued / "energy-regulator.pem", issued / "energy-regulator.key"
        )
        with httpx.Client(verify=ctx, timeout=HTTP_TIMEOUT_S) as client:
            answer = client.get(f"https://127.0.0.1:{port}/healthz").json()
        assert answer == {"status": "ok", "peer": "energy-regulator", "role": "regulator"}
        with (
            httpx.Client(verify=client_context(ca_pem), timeout=HTTP_TIMEOUT_S) as client,
            pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)),
        ):
            client.get(f"https://127.0.0.1:{port}/healthz")
        # the customer portal: TLS that authenticates the server only; customers sign in
        _wait_for(portal, process)
        with httpx.Client(verify=client_context(ca_pem), timeout=HTTP_TIMEOUT_S) as client:
            me = client.get(f"https://127.0.0.1:{portal}/me/consents")
        assert me.status_code == 401 and "sign in" in me.text.lower()
    finally:
        process.terminate()
        process.wait(timeout=60)
