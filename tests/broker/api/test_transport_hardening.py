"""Response headers, documentation pages and slow clients, over the real HTTPS servers of the
API and the portal (T7, C1.8; OWASP API8): every answer says ``Cache-Control: no-store`` and
``X-Content-Type-Options: nosniff`` and carries HSTS, no ``Server`` banner; Swagger UI and ReDoc
(which loaded their assets from a public CDN) are not served; the portal's OpenAPI description
is not published to anonymous callers; a client that sends its headers too slowly (slowloris)
is disconnected within the header timeout."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.ca.authority import CertificateAuthority
from broker.kit.clock import SystemClock
from broker.oauth.settings import OAuthSettings
from broker.portal.serve import running_portal
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.settings import Mode
from tests.broker.fakes import settings_for
from tests.broker.oauth.conftest import ISSUER, Broker, Party

pytestmark = pytest.mark.timeout(90)
HEADER_TIMEOUT_S = 2.0


def _runtime(tmp_path: Path, mode: Mode = Mode.production) -> Runtime:
    settings = settings_for(tmp_path / "var", mode, http_header_timeout_s=HEADER_TIMEOUT_S)
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    return Runtime.open(settings)


@pytest.fixture(params=[Mode.production, Mode.development], ids=["production", "development"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Broker, Party]]:
    rt = _runtime(tmp_path, request.param)
    served = build(rt, "test", poll_s=3600, oauth=OAuthSettings(issuer=ISSUER))
    with running(served) as port:
        broker = Broker(rt, f"https://127.0.0.1:{port}", rt.settings.ca_dir / "ca.pem", tmp_path)
        yield broker, broker.onboard("acme")
    rt.close()


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[tuple[Runtime, int]]:
    rt = _runtime(tmp_path)
    with running_portal(rt, "test") as port:
        yield rt, port
    rt.close()


def _hardened(answer: httpx.Response) -> None:
    assert answer.headers.get("cache-control") == "no-store", answer.headers
    assert answer.headers.get("x-content-type-options") == "nosniff", answer.headers
    assert answer.headers.get("strict-transport-security", "").startswith("max-age="), answer
    assert "server" not in answer.headers, answer.headers


def test_T7_api_answers_carry_no_store_nosniff_hsts_and_no_server_banner(
    api: tuple[Broker, Party],
) -> None:
    broker, acme = api
    with broker.client(acme) as client:
        answers = [
            client.get("/healthz"),
            client.get("/openapi.json"),
            client.get("/no/such/route"),
            client.get("/v1/recipients/acme"),
            client.get("/healthz", params={"q": "\x00"}),
            client.post("/v1/recipients", json={"unknown": 1}),
            client.get("/.well-known/jwks.json"),
        ]
    assert [a.status_code for a in answers] == [200, 200, 404, 200, 422, 403, 200]
    for answer in answers:
        _hardened(answer)


def test_T7_api_serves_no_swagger_ui_or_redoc_in_any_mode(api: tuple[Broker, Party]) -> None:
    """The pages loaded their scripts from a public CDN; the description stays at
    /openapi.json for authenticated callers (mutual TLS)."""
    broker, acme = api
    with broker.client(acme) as client:
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            answer = client.get(page)
            assert answer.status_code == 404, page
            assert "cdn" not in answer.text.lower()
        assert "paths" in client.get("/openapi.json").json()


def test_T7_portal_answers_are_hardened_and_publish_no_description(
    portal: tuple[Runtime, int],
) -> None:
    rt, port = portal
    ca = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca, timeout=10) as client:
        pages = [client.get("/login"), client.get("/me/consents"), client.get("/nowhere")]
        assert [p.status_code for p in pages] == [200, 401, 404]
        for answer in pages:
            _hardened(answer)
        for hidden in ("/openapi.json", "/docs", "/redoc"):
            refused = client.get(hidden)
            assert refused.status_code == 404, hidden
            _hardened(refused)


def _closed_within(sock: ssl.SSLSocket, deadline_s: float) -> bool:
    """True once the server closed ``sock`` (EOF or reset), polling until the deadline."""
    sock.settimeout(0.2)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True
    return False


def _tls(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_T7_a_client_sending_headers_slowly_is_disconnected(api: tuple[Broker, Party]) -> None:
    """Slowloris: a partial request (and a connection that sends nothing) is closed within the
    header timeout (here 2 s; the deadline is generous for a loaded machine), while a whole
    request on a connection of the same age is answered."""
    broker, acme = api
    port = int(broker.url.rsplit(":", 1)[1])
    ctx = client_context(broker.ca_pem, acme.cert, acme.key)
    partial, silent = _tls(port, ctx), _tls(port, ctx)
    try:
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _closed_within(partial, 20), "a partial request was kept open"
        assert _closed_within(silent, 20), "a connection that sent nothing was kept open"
    finally:
        partial.close()
        silent.close()
    dribbled = _tls(port, ctx)
    try:
        for chunk in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n"):
            dribbled.sendall(chunk)
        dribbled.sendall(b"\r\n")
        dribbled.settimeout(10)
        assert dribbled.recv(1024).startswith(b"HTTP/1.1 200")
        dribbled.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then nothing
        assert _closed_within(dribbled, 20), "a partial second request was kept open"
    finally:
        dribbled.close()


def test_T7_the_portal_disconnects_slow_headers_too(portal: tuple[Runtime, int]) -> None:
    rt, port = portal
    ctx = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    sock = _tls(port, ctx)
    try:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert _closed_within(sock, 20)
    finally:
        sock.close()
