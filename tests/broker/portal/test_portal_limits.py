"""The customer portal's limits over real TLS (T7): sign-ins have a token bucket per client
address, consent decisions and withdrawals one per signed-in customer, each answering 429 with
Retry-After and a page that says when to try again; forms are bounded (413) before more than the
bound is read. The runtime is made once per module; each test gets a fresh portal, so fresh
buckets."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import httpx
import pytest

from broker.ca.authority import CertificateAuthority
from broker.customers.accounts import Accounts
from broker.kit.clock import SystemClock
from broker.portal.serve import running_portal
from broker.portal.web import portal_app
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from tests.broker.fakes import settings_for

pytestmark = pytest.mark.timeout(60)
BURST = 3
MAX_FORM = 2048
PASSWORDS = {"alice": "correct horse battery", "bob": "another long passphrase"}


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    settings = settings_for(
        tmp_path_factory.mktemp("portal") / "var",
        portal_rate_per_s=0.01,
        portal_burst=BURST,
        portal_max_body_bytes=MAX_FORM,
        portal_signin_free_failures=100,  # wrong passwords wait only for the bucket here
        portal_signin_source_free_failures=1000,
    )
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    runtime = Runtime.open(settings)
    accounts = Accounts(runtime.audit, runtime.clock, runtime.hasher)
    with runtime.db.transaction() as session:
        for n, (user, password) in enumerate(PASSWORDS.items(), start=1):
            accounts.create(session, user, f"CUST-000000{n}", password, "test")
    yield runtime
    runtime.close()


@pytest.fixture
def portal(rt: Runtime) -> Iterator[str]:
    with running_portal(rt, "test") as port:
        yield f"https://127.0.0.1:{port}"


def _client(rt: Runtime, base: str) -> httpx.Client:
    ca = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    return httpx.Client(base_url=base, timeout=10, verify=ca)


def _sign_in(client: httpx.Client, user: str, password: str | None = None) -> httpx.Response:
    form = {"username": user, "password": password or PASSWORDS[user]}
    return client.post("/login", data=form)


def _is_wait_page(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    wait = int(response.headers["Retry-After"])
    assert wait >= 1 and response.headers["content-type"].startswith("text/html")
    assert re.search(rf"Try again in {wait} seconds, after \d\d:\d\d:\d\d UTC", response.text)


def test_T7_sign_ins_over_the_rate_of_an_address_get_a_page_saying_when_to_retry(
    rt: Runtime, portal: str
) -> None:
    with _client(rt, portal) as client:
        guesses = [_sign_in(client, "nobody", "guess number one") for _ in range(BURST)]
        over = _sign_in(client, "alice")  # even the right password waits
    assert [g.status_code for g in guesses] == [401] * BURST
    _is_wait_page(over)
    assert "Too many sign-in attempts from your address" in over.text
    assert over.headers["x-frame-options"] == "DENY"


def test_T7_decisions_and_withdrawals_are_limited_per_customer(rt: Runtime, portal: str) -> None:
    stale = {"query": "client_id=acme-energy", "token": "stale", "action": "approve"}
    with _client(rt, portal) as alice, _client(rt, portal) as bob:
        assert _sign_in(alice, "alice").status_code == 303
        assert _sign_in(bob, "bob").status_code == 303
        answers = [alice.post("/oauth/authorize/decision", data=stale) for _ in range(BURST)]
        over = [
            alice.post("/oauth/authorize/decision", data=stale),
            alice.post("/me/consents/cn_nothing/withdraw"),
        ]
        unaffected = bob.post("/oauth/authorize/decision", data=stale)
        bob_withdraws = bob.post("/me/consents/cn_nothing/withdraw")
    assert [a.status_code for a in answers] == [403] * BURST  # stale forms, each counted
    for response in over:
        _is_wait_page(response)
        assert "Too many requests from your account" in response.text
    assert unaffected.status_code == 403 and bob_withdraws.status_code == 404


def test_T7_form_over_the_limit_is_413_from_its_length_or_as_it_is_read(
    rt: Runtime, portal: str
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"username=alice&password="
        yield from [b"x" * 1000] * 3

    with _client(rt, portal) as client:
        declared = _sign_in(client, "alice", "x" * MAX_FORM)
        chunked = client.post(
            "/login",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        taken = _sign_in(client, "alice")
    assert declared.status_code == 413 and chunked.status_code == 413
    for refused in (declared, chunked):
        assert refused.headers["content-type"].startswith("text/html")
        assert f"over the limit of {MAX_FORM} bytes" in refused.text
    assert taken.status_code == 303


def test_T7_openapi_documents_the_portals_limits(rt: Runtime) -> None:
    """The description is built for the operator (``app.openapi()``), not published."""
    spec = portal_app(rt).openapi()
    for path in ("/login", "/oauth/authorize/decision", "/me/consents/{consent_id}/withdraw"):
        refusal = spec["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in refusal["headers"] and "text/html" in refusal["content"]
    assert "413" in spec["paths"]["/login"]["post"]["responses"]
    access = spec["paths"]["/me/access"]["get"]
    limit = next(p for p in access["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500
    assert access["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_T7_a_forwarded_for_header_does_not_buy_a_fresh_bucket(rt: Runtime, portal: str) -> None:
    """The address is the connection's: X-Forwarded-For from a loopback client is ignored."""
    with _client(rt, portal) as client:
        answers = [
            client.post(
                "/login",
                data={"username": "nobody", "password": "guess"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            )
            for n in range(BURST + 1)
        ]
    assert [a.status_code for a in answers[:BURST]] == [401] * BURST
    _is_wait_page(answers[BURST])
