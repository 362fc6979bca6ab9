"""Limits of the API before any work, over real mutual TLS on loopback (T7, C1.8): every body
is bounded (413 from a declared Content-Length at once, and from a chunked body as it is read),
the feeds, regulator and recipients routes share one token bucket per client certificate (429
with Retry-After), and every refusal, FastAPI's own validation included, has the one error
shape.

``running_broker`` starts the fully wired server (``create_app`` with a runtime, through
``build``) once per module; the other API test modules use it too."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.ca.authority import CertificateAuthority
from broker.kit.clock import SystemClock
from broker.oauth.settings import OAuthSettings
from broker.recipients.service import Recipients
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.runtime.wiring import open_ca
from tests.broker.fakes import settings_for
from tests.broker.oauth.conftest import ISSUER, Broker, Party

pytestmark = pytest.mark.timeout(60)
MAX_BODY = 4096
BURST = 6
JSON = {"content-type": "application/json"}


@contextmanager
def running_broker(tmp: Path, **settings: Any) -> Iterator[Broker]:
    """The broker's HTTPS server as ``broker serve`` builds it, on a fresh data directory."""
    config = settings_for(tmp / "var", **settings)
    prepare_data_dir(config)
    init_keys(config)
    upgrade_schema(config).dispose()
    CertificateAuthority.create(config, SystemClock())
    rt = Runtime.open(config)
    oauth = OAuthSettings(issuer=ISSUER, rate_per_s=1000, burst=1000)
    try:
        with running(build(rt, "test", poll_s=3600, oauth=oauth)) as port:
            yield Broker(rt, f"https://127.0.0.1:{port}", config.ca_dir / "ca.pem", tmp)
    finally:
        rt.close()


def issued(broker: Broker, name: str, role: str) -> Party:
    """A client with a certificate of ``role`` from the broker's CA (and no assertion key)."""
    with broker.rt.db.transaction() as session:
        made = open_ca(broker.rt).issue(session, broker.rt.audit, role=role, name=name, actor="t")
    assert made.key_path is not None
    return Party(name, made.cert_path, made.key_path, None)  # type: ignore[arg-type]


def operator(broker: Broker, name: str = "ops") -> Party:
    """A client with an ``operator`` certificate: it manages recipients."""
    return issued(broker, name, "operator")


def bearer(broker: Broker, who: Party, scope: str = "feeds:read feeds:write") -> dict[str, str]:
    response = broker.token(who, scope)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def error_of(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    detail: str = body["detail"]
    return detail


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tmp = tmp_path_factory.mktemp("limits")
    limits = {"api_max_body_bytes": MAX_BODY, "api_rate_per_s": 0.01, "api_burst": BURST}
    with running_broker(tmp, **limits) as running_one:
        yield running_one


def _registration(recipient_id: str) -> dict[str, Any]:
    return {"recipient_id": recipient_id, "display_name": recipient_id.title(), "kind": "supplier"}


def _raw_exchange(broker: Broker, who: Party, head: bytes) -> tuple[int, dict[str, Any]]:
    """Send ``head`` (request line and headers, no body) over mutual TLS; the status and body."""
    host, port = broker.url.removeprefix("https://").split(":")
    ctx = client_context(broker.ca_pem, who.cert, who.key)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += tls.recv(65536)
        headers, _, body = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", headers.lower()).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += tls.recv(65536)
    return int(headers.split()[1]), json.loads(body)


def test_T7_C1_8_declared_body_over_the_limit_is_413_before_it_is_sent(broker: Broker) -> None:
    ops = operator(broker, "ops-declared")
    head = (
        b"POST /v1/recipients HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )
    status, body = _raw_exchange(broker, ops, head)  # no byte of the body is ever sent
    assert status == 413 and body == {
        "error": "PayloadTooLarge",
        "detail": f"the body of 10000000 bytes is over the limit of {MAX_BODY} bytes",
    }


def test_T7_C1_8_body_over_the_limit_is_refused_and_the_next_request_served(
    broker: Broker,
) -> None:
    ops = operator(broker, "ops-over")
    body = json.dumps(_registration("big")).encode() + b" " * MAX_BODY
    with broker.client(ops) as client:
        refused = client.post("/v1/recipients", content=body, headers=JSON)
        taken = client.post("/v1/recipients", json=_registration("small"))
    detail = error_of(refused, 413, "PayloadTooLarge")
    assert detail == f"the body of {len(body)} bytes is over the limit of {MAX_BODY} bytes"
    assert taken.status_code == 201, taken.text


def test_T7_C1_8_chunked_body_is_counted_as_it_is_read_and_refused_past_the_limit(
    broker: Broker,
) -> None:
    ops = operator(broker, "ops-chunked")
    seen: list[httpx.Request] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"recipient_id": "chunky", "kind": "supplier", "display_name": "'
        yield from [b"x" * 1000] * 10

    with broker.client(ops) as client:
        client.event_hooks["request"] = [seen.append]
        refused = client.post("/v1/recipients", content=chunks(), headers=JSON)
    assert "content-length" not in seen[0].headers
    assert seen[0].headers["transfer-encoding"] == "chunked"
    detail = error_of(refused, 413, "PayloadTooLarge")
    assert detail == f"the body is over the limit of {MAX_BODY} bytes"
    with broker.rt.db.transaction() as session:
        assert Recipients(broker.rt.audit, broker.rt.clock).find(session, "chunky") is None


def test_body_at_the_limit_is_read(broker: Broker) -> None:
    body = json.dumps(_registration("exact")).encode()
    body += b" " * (MAX_BODY - len(body))
    with broker.client(operator(broker, "ops-exact")) as client:
        taken = client.post("/v1/recipients", content=body, headers=JSON)
    assert len(body) == MAX_BODY and taken.status_code == 201, taken.text


def test_C1_8_the_token_endpoint_keeps_its_own_bound(broker: Broker) -> None:
    acme = broker.onboard("acme-bound")
    form = {"grant_type": "client_credentials", "client_id": "acme-bound", "scope": "feeds:read"}
    padded = form | {"padding": "x" * MAX_BODY}  # over the API's bound, under the endpoint's
    with broker.client(acme) as client:
        answer = client.post("/oauth/token", data=padded)
        huge = client.post("/oauth/token", data=form | {"padding": "x" * 10_000})
    assert answer.status_code == 200, answer.text  # read and answered
    assert "8192 bytes" in error_of(huge, 413, "PayloadTooLarge")


def test_T7_one_bucket_per_client_across_recipients_feeds_and_regulator_routes(
    broker: Broker,
) -> None:
    acme, other = broker.onboard("acme-rate"), broker.onboard("other-rate")
    auth = bearer(broker, acme)  # the token endpoint has its own bucket
    with broker.client(acme) as client:
        answers = [client.get("/v1/recipients/acme-rate") for _ in range(BURST - 1)]
        answers.append(client.get("/v1/feeds/fd_nothing", headers=auth))
        over = [
            client.get("/v1/feeds/fd_nothing", headers=auth),
            client.get("/v1/recipients/acme-rate"),
            client.get("/v1/regulator/metrics"),  # refused before the role is even looked at
        ]
    with broker.client(other) as client:
        unaffected = client.get("/v1/recipients/other-rate")
    assert [a.status_code for a in answers] == [200] * (BURST - 1) + [404]
    for answer in over:
        assert "makes requests too often" in error_of(answer, 429, "Throttled")
        assert int(answer.headers["Retry-After"]) >= 1
    assert unaffected.status_code == 200  # one client's flood does not stop another


def test_T7_every_refusal_has_the_one_error_shape(broker: Broker) -> None:
    acme = broker.onboard("acme-shape")
    feed = {"purpose": "personalised_service", "categories": ["consumption"],
            "granularity": "hourly", "scope": "subject", "subject": "CUST-1"}  # fmt: skip
    with broker.client(acme) as client:
        extra = client.post(
            "/v1/feeds", json=feed | {"recipient": "x"}, headers=bearer(broker, acme)
        )
        missing = client.get("/v1/nothing-here")
        method = client.put("/healthz")
        not_theirs = client.get("/v1/regulator/audit", params={"limit": "many"})
    with broker.client(issued(broker, "shape-regulator", "regulator")) as client:
        bad_limit = client.get("/v1/regulator/audit", params={"limit": "many"})
    assert "needs a certificate of role regulator" in error_of(not_theirs, 403, "Forbidden")
    assert (
        error_of(extra, 422, "InvalidRequest") == "body.recipient: Extra inputs are not permitted"
    )
    assert error_of(missing, 404, "NotFound") == "Not Found"
    assert error_of(method, 405, "MethodNotAllowed") == "Method Not Allowed"
    assert "query.limit: Input should be a valid integer" in error_of(
        bad_limit, 422, "InvalidRequest"
    )
