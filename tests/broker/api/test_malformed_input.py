"""Malformed input through the real HTTPS server, on SQLite and PostgreSQL (T7, C1.8; OWASP
API8): a time without a UTC offset, control characters (NUL above all) in any string of a body,
a path or a query, and a display name with invisible bidirectional formatting are refused with
422 in the one error shape and store nothing; an unexpected exception answers 500 in that shape,
without a traceback, and leaves the keep-alive connection usable for the next request."""

from __future__ import annotations

import dataclasses
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import func, select

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.ca.authority import CertificateAuthority
from broker.kit.clock import SystemClock
from broker.oauth.settings import OAuthSettings
from broker.recipients.models import Recipient, RecipientKey
from broker.recipients.service import Recipients
from broker.release.models import Feed
from broker.runtime.core import Runtime, init_keys, prepare_data_dir
from broker.runtime.wiring import open_ca
from broker.storage.db import Database
from tests.broker.fakes import settings_for
from tests.broker.oauth.conftest import ISSUER, Broker, Party

pytestmark = pytest.mark.timeout(120)
NUL = "\x00"
BIDI = "Acme \u202eecivreS"
SCOPES = "feeds:read feeds:write deletions:read deletions:write"


@pytest.fixture
def served(database: Database, tmp_path: Path) -> Iterator[Broker]:
    """The broker as ``broker serve`` serves it, on ``database``."""
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    CertificateAuthority.create(settings, SystemClock())
    rt = Runtime.open(settings)
    rt.db.dispose()
    rt = dataclasses.replace(rt, db=database)
    oauth = OAuthSettings(issuer=ISSUER, rate_per_s=1000, burst=1000)
    with running(build(rt, "test", poll_s=3600, oauth=oauth)) as port:
        yield Broker(rt, f"https://127.0.0.1:{port}", settings.ca_dir / "ca.pem", tmp_path)


def _issue(broker: Broker, name: str, role: str) -> Party:
    with broker.rt.db.transaction() as session:
        made = open_ca(broker.rt).issue(session, broker.rt.audit, role=role, name=name, actor="t")
    assert made.key_path is not None
    return Party(name, made.cert_path, made.key_path, None)  # type: ignore[arg-type]


def _count(broker: Broker, model: Any) -> int:
    with broker.rt.db.transaction() as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def _refused(answer: Any, *words: str) -> None:
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "InvalidRequest", body
    for word in words:
        assert word in body["detail"], body


def _feed(**override: Any) -> dict[str, Any]:
    return {
        "purpose": "personalised_service",
        "categories": ["consumption"],
        "granularity": "daily",
        "scope": "subject",
        "subject": "CUST-0000001",
    } | override


def test_T7_a_time_without_a_utc_offset_is_refused_clearly(served: Broker) -> None:
    """C1.8: ``period_from`` without an offset was a 500 (naive and aware times compared)."""
    acme = served.onboard("acme")
    token = served.token(acme, SCOPES).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    with served.client(acme) as client:
        for field in ("period_from", "period_to"):
            naive = client.post(
                "/v1/feeds", headers=auth, json=_feed(**{field: "2026-11-20T00:00"})
            )
            _refused(naive, f"body.{field}", "timezone")
    regulator = _issue(served, "reg", "regulator")
    with served.client(regulator) as client:
        for where in ("/v1/regulator/audit", "/v1/regulator/export"):
            _refused(client.get(where, params={"since": "2026-11-20T00:00:00"}), "query.since")
        assert client.get("/v1/regulator/audit", params={"since": "2026-11-20T00:00Z"}).is_success
    assert _count(served, Feed) == 0


def test_T7_control_characters_in_a_feed_are_refused_and_nothing_is_stored(
    served: Broker,
) -> None:
    """NUL was a 500 on PostgreSQL and stored as is on SQLite."""
    acme = served.onboard("acme")
    token = served.token(acme, SCOPES).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    bad: list[dict[str, Any]] = [
        {"purpose": f"personalised_service{NUL}"},
        {"subject": f"CUST-0000001{NUL}"},
        {"scope": "aggregate", "subject": None, "groups": [f"F-001{NUL}"]},
        {"categories": [f"consumption{NUL}"]},
        {"granularity": f"daily{NUL}"},
        {"tier": f"\x1b[31m{NUL}"},
    ]
    with served.client(acme) as client:
        for override in bad:
            _refused(client.post("/v1/feeds", headers=auth, json=_feed(**override)), "control")
        for query in ({"cursor": f"a{NUL}b"}, {"format": f"json{NUL}"}):
            _refused(client.get("/v1/feeds/f1/data", headers=auth, params=query), "control")
        _refused(client.get("/v1/feeds/f1%00x", headers=auth), "control")
    assert _count(served, Feed) == 0


def test_R3_3_control_characters_and_bidi_overrides_in_a_registration_are_refused(
    served: Broker,
) -> None:
    """C3.2, R3.3: every string of a registration, and a display name that would read as
    another name, is refused over the API; nothing is stored."""
    ops = _issue(served, "ops", "operator")
    good = {"recipient_id": "acme", "display_name": "Acme", "kind": "third_party"}
    bad: list[dict[str, Any]] = [
        {"recipient_id": f"acme{NUL}"},
        {"display_name": f"Acme{NUL}"},
        {"display_name": "Acme\r\nInc"},
        {"display_name": BIDI},
        {"display_name": "Acme\u2066Inc"},
        {"display_name": "Acme\u200bInc"},
        {"purposes": [f"billing{NUL}"]},
        {"webhook_url": f"https://hooks.example/{NUL}"},
    ]
    with served.client(ops) as client:
        for override in bad:
            refused = client.post("/v1/recipients", json=good | override)
            _refused(refused, "body." + next(iter(override)))
        _refused(client.get("/v1/recipients/acme%00"), "control")
        assert client.post("/v1/recipients", json=good).status_code == 201
        _refused(client.post("/v1/recipients/acme/suspend", json={"reason": f"x{NUL}"}), "control")
        key = {"kty": "EC", "crv": "P-256", "kid": f"k{NUL}", "x": "AA", "y": "AA"}
        _refused(client.post("/v1/recipients/acme/keys", json=key), "control")
        csr = {"csr_pem": f"-----BEGIN CERTIFICATE REQUEST-----\n{NUL}\n"}
        _refused(client.post("/v1/recipients/acme/certificate", json=csr), "control")
        listed = client.get("/v1/recipients").json()
    assert [r["display_name"] for r in listed] == ["Acme"]
    assert [r["status"] for r in listed] == ["active"]
    assert _count(served, Recipient) == 1 and _count(served, RecipientKey) == 0


def test_R3_4_control_characters_in_deletion_routes_are_refused(served: Broker) -> None:
    acme = served.onboard("acme")
    token = served.token(acme, SCOPES).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    with served.client(acme) as client:
        _refused(client.post("/v1/deletions/d1/ack", headers=auth, json={"ack": NUL}), "control")
    regulator = _issue(served, "reg", "regulator")
    with served.client(regulator) as client:
        refused = client.get("/v1/regulator/deletions", params={"recipient": f"acme{NUL}"})
        _refused(refused, "control")
        _refused(client.get("/v1/regulator/audit", params={"recipient": f"a{NUL}"}), "control")


def _raw(broker: Broker, party: Party) -> http.client.HTTPSConnection:
    port = int(broker.url.rsplit(":", 1)[1])
    ctx = client_context(broker.ca_pem, party.cert, party.key)
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)


def _exchange(conn: http.client.HTTPSConnection, path: str) -> tuple[int, bytes, Any]:
    conn.request("GET", path)
    answer = conn.getresponse()
    return answer.status, answer.read(), answer


def test_T7_an_unexpected_exception_answers_the_error_shape_and_keeps_the_connection(
    served: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C1.8: a bug answers 500 in the one error shape with no traceback, and the next request
    on the same keep-alive connection works (the server used to drop it without saying so)."""
    ops = _issue(served, "ops", "operator")

    def broken(*_args: object) -> list[Recipient]:
        raise RuntimeError("secret internals: /srv/broker/db password=hunter2")

    monkeypatch.setattr(Recipients, "all", broken)
    conn = _raw(served, ops)
    try:
        status, body, answer = _exchange(conn, "/v1/recipients")
        assert conn.sock is not None
        local = conn.sock.getsockname()
        assert status == 500
        assert answer.getheader("content-type") == "application/json"
        shape = json.loads(body)
        assert set(shape) == {"error", "detail"} and shape["error"] == "InternalError"
        for leak in ("hunter2", "Traceback", "RuntimeError", "/srv"):
            assert leak not in body.decode()
        status, body, _ = _exchange(conn, "/healthz")
        assert status == 200 and json.loads(body)["peer"] == "ops"
        assert conn.sock is not None and conn.sock.getsockname() == local  # the same connection
    finally:
        conn.close()
