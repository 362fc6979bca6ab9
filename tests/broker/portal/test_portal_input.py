"""Malformed input at the customer portal, over real TLS on SQLite and PostgreSQL (T7, C1.8):
a sign-in name or password with NUL, and a consent request whose query holds one, are refused
with 422 in the one error shape (NUL was a 500 on PostgreSQL); nothing is stored. A bug answers
500 in that shape and the next request on the same keep-alive connection is answered."""

from __future__ import annotations

import dataclasses
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import func, select

from broker.ca.authority import CertificateAuthority
from broker.customers.accounts import Accounts
from broker.customers.errors import AccountError
from broker.kit.clock import SystemClock
from broker.portal.serve import running_portal
from broker.runtime.core import Runtime, init_keys, prepare_data_dir
from broker.schema.tables import metadata
from broker.storage.db import Database
from tests.broker.fakes import settings_for

pytestmark = pytest.mark.timeout(90)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def portal(database: Database, tmp_path: Path) -> Iterator[tuple[Runtime, int]]:
    settings = settings_for(tmp_path / "var", portal_rate_per_s=1000.0, portal_burst=1000.0)
    prepare_data_dir(settings)
    init_keys(settings)
    CertificateAuthority.create(settings, SystemClock())
    rt = Runtime.open(settings)
    rt.db.dispose()
    rt = dataclasses.replace(rt, db=database)
    with running_portal(rt, "test") as port:
        yield rt, port


def _connect(rt: Runtime, port: int) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)


def _ask(
    conn: http.client.HTTPSConnection, method: str, path: str, body: str | None = None
) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=FORM if body is not None else {})
    answer = conn.getresponse()
    return answer.status, answer.read()


def _rows(rt: Runtime) -> dict[str, int]:
    """Rows per table, the audit log's included."""
    with rt.db.transaction() as session:
        return {
            t.name: int(session.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables
        }


def test_T7_nul_in_a_sign_in_or_a_consent_request_is_refused_and_nothing_is_stored(
    portal: tuple[Runtime, int],
) -> None:
    rt, port = portal
    before = _rows(rt)
    conn = _connect(rt, port)
    try:
        for form in (
            "username=alice%00&password=correct+horse+battery",
            "username=alice&password=pass%00word",
            "username=alice&password=x&next=client_id%3Dacme%00",
        ):
            status, body = _ask(conn, "POST", "/login", form)
            assert status == 422, body
            refusal = json.loads(body)
            assert refusal["error"] == "InvalidRequest" and "control character" in refusal["detail"]
        status, body = _ask(conn, "GET", "/oauth/authorize?client_id=acme%00&response_type=code")
        assert status == 422 and b"control character" in body
        conn.request("GET", "/me/consents", headers={"Cookie": 'broker_session="\\000forged"'})
        answer = conn.getresponse()  # a cookie's quoted octal escape decodes to NUL
        assert answer.status == 401, answer.read()
        answer.read()
    finally:
        conn.close()
    assert _rows(rt) == before  # no account, throttle, session or audit row


def test_T7_a_bug_in_the_portal_answers_the_error_shape_and_keeps_the_connection(
    portal: tuple[Runtime, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, port = portal

    def broken(*_args: object) -> None:
        raise RuntimeError("internals: password=hunter2")

    monkeypatch.setattr("broker.portal.pages.login_form", broken)
    conn = _connect(rt, port)
    try:
        status, body = _ask(conn, "GET", "/login")
        assert conn.sock is not None
        local = conn.sock.getsockname()
        assert status == 500 and json.loads(body)["error"] == "InternalError"
        assert b"hunter2" not in body and b"Traceback" not in body
        status, body = _ask(conn, "GET", "/me/consents")
        assert status == 401  # answered: not signed in
        assert conn.sock is not None and conn.sock.getsockname() == local
    finally:
        conn.close()


@pytest.mark.parametrize("username", ["ali\x00ce", "alice\n", "ali\u202ece"])
def test_T7_an_account_name_with_control_or_format_characters_is_never_created(
    portal: tuple[Runtime, int], username: str
) -> None:
    """Every path that creates an account (CLI, import, tests) goes through the service."""
    rt, _port = portal
    before = _rows(rt)
    with pytest.raises(AccountError, match="the username holds"), rt.db.transaction() as session:
        Accounts(rt.audit, rt.clock, rt.hasher).create(
            session, username, "CUST-0000001", "a long enough password", "test"
        )
    assert _rows(rt) == before
