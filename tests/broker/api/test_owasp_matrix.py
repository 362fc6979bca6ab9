"""The OWASP API Security Top 10 (2023) against the broker, through the real HTTPS servers with
real client certificates. The cases no other module covers are here, against one fully wired
broker and its customer portal per module; for the rest the matrix names where they live (and
``test_the_matrix_names_only_tests_that_exist`` keeps it honest).

API1 Broken object level authorization
    customer A reads or withdraws B's consent, or forges B's session:
        test_C2_2_a_customer_cannot_reach_another_customers_consents_or_session (here)
        tests/broker/portal/test_consent_flow.py
            ::test_C2_2_a_customer_reaches_only_their_own_consents_and_history
    a third party reads, pages or stops another's feed, or forges a cursor:
        test_C2_2_a_third_party_cannot_read_or_stop_another_recipients_feed (here)
        tests/broker/release/test_feeds.py
            ::test_C2_2_a_recipient_cannot_read_another_recipients_feed_over_mtls
            ::test_C2_2_cursors_and_feeds_are_the_recipients_own
    a recipient reads another's registry record:
        tests/broker/recipients/test_api.py::test_R3_3_a_recipient_reads_only_its_own_record
API2 Broken authentication
    a token shown with the wrong certificate:
        test_C2_2_a_third_party_cannot_read_or_stop_another_recipients_feed (here)
        tests/broker/oauth/test_token_endpoint.py
            ::test_C3_2_token_shown_with_another_clients_certificate_is_refused
    an expired certificate, one of another CA, none at all:
        tests/broker/api/test_mtls.py
            ::test_C3_2_expired_certificate_is_refused
            ::test_C3_2_certificate_of_another_ca_is_refused
            ::test_C2_1_client_without_a_certificate_cannot_connect
    a revoked certificate (CRL):
        tests/broker/api/test_mtls.py
            ::test_C3_2_certificate_revoked_while_running_is_refused_at_once
            ::test_C3_2_revocation_reaches_the_handshake_of_a_running_server
        tests/broker/oauth/test_token_endpoint.py
            ::test_C3_2_revoked_recipient_certificate_is_refused
    a replayed private_key_jwt assertion; a forged, expired or missing token:
        tests/broker/oauth/test_token_endpoint.py
            ::test_C3_2_replayed_assertion_is_refused
            ::test_C3_2_assertion_signed_by_another_key_is_refused
            ::test_C3_2_expired_token_is_refused
            ::test_C3_2_token_signed_by_another_key_or_missing_is_refused
    a token issued before its recipient was suspended, shown after the reinstatement:
        tests/broker/release/test_token_scopes.py
            ::test_R3_3_a_token_issued_before_a_suspension_stays_refused_after_reinstatement
    guessing a customer's password:
        tests/broker/portal/test_consent_flow.py::test_bad_requests_and_wrong_passwords
        tests/broker/portal/test_portal_limits.py
            ::test_T7_sign_ins_over_the_rate_of_an_address_get_a_page_saying_when_to_retry
API3 Broken object property level authorization
    mass assignment (a recipient, status or certificate role in a body):
        test_R3_3_mass_assignment_is_refused_on_every_body (here)
        tests/broker/recipients/test_api.py::test_mass_assignment_is_refused
    excessive data exposure to the grid operator:
        tests/broker/release/test_feeds.py
            ::test_R4_4_ems_feed_pages_hold_no_meter_id_or_small_group
API4 Unrestricted resource consumption
    unbounded page sizes:
        test_T7_unbounded_page_sizes_are_refused (here)
    large bodies and floods of requests:
        tests/broker/api/test_limits.py
        tests/broker/portal/test_portal_limits.py
        tests/broker/oauth/test_token_endpoint.py
            ::test_C1_8_oversized_token_request_is_413
            ::test_C1_8_a_client_over_its_rate_gets_429_with_retry_after
        tests/broker/api/test_mdms_api.py
            ::test_T4_C1_8_over_the_token_bucket_is_429_with_retry_after
    clients that send their headers slowly (slowloris):
        tests/broker/api/test_transport_hardening.py
            ::test_T7_a_client_sending_headers_slowly_is_disconnected
            ::test_T7_the_portal_disconnects_slow_headers_too
API5 Broken function level authorization
    a third party manages recipients, reads the regulator's routes or MDMS metrics, posts
    frames, or asks for a scope it was not given:
        tests/broker/recipients/test_api.py::test_R3_3_a_recipient_reads_only_its_own_record
        tests/broker/api/test_regulator_api.py
            ::test_regulator_reads_by_pseudonym_exports_and_metrics
        tests/broker/api/test_mdms_api.py
            ::test_C1_1_only_a_concentrator_may_post_frames
            ::test_C1_1_metrics_are_refused_to_other_roles
        tests/broker/oauth/test_token_endpoint.py::test_R4_3_scopes_are_denied_by_default
    a recipient asks a feed for a purpose it is not registered for, or keeps paging one after
    its registration was narrowed:
        tests/broker/release/test_feed_gates.py
            ::test_R3_5_a_feed_for_a_purpose_outside_the_registration_is_refused_before_any_decision
            ::test_R3_5_a_feed_whose_purpose_leaves_the_registration_stops_at_the_next_page
    a read-only token creates or cancels a feed; a token narrowed to a purpose or a consent
    reaches another purpose or customer; a route whose scope is not the one table's:
        tests/broker/release/test_token_scopes.py
            ::test_R3_3_a_read_only_token_neither_creates_nor_cancels_a_feed
            ::test_R3_3_a_purpose_narrowed_token_neither_subscribes_nor_pulls_for_another_purpose
            ::test_R3_3_C3_2_a_consent_token_subscribes_and_pulls_only_within_its_consent
        tests/broker/api/test_route_scopes.py
            ::test_R3_3_every_route_takes_its_access_from_the_one_table
API6 Unrestricted access to sensitive business flows
    a consent code redeemed twice or by another client; a forged consent form; consent
    decisions in bulk:
        tests/broker/oauth/test_code_grant.py
            ::test_C3_2_code_redeemed_once_with_its_verifier_for_a_bound_token_naming_the_consent
            ::test_C3_2_a_code_is_only_for_the_client_it_was_issued_to
        tests/broker/portal/test_consent_flow.py::test_bad_requests_and_wrong_passwords
        tests/broker/portal/test_portal_limits.py
            ::test_T7_decisions_and_withdrawals_are_limited_per_customer
API7 Server-side request forgery
    a webhook URL that points the broker at a plain-HTTP or local service:
        test_C3_2_webhook_urls_are_https_and_only_an_operator_sets_them (here)
        tests/broker/delivery/test_push.py::test_C3_2_a_push_the_recipient_refuses_is_dead_at_once
        tests/broker/recipients/test_webhook_egress.py
            ::test_R3_1_the_api_refuses_webhooks_that_reach_internal_addresses
            ::test_R3_1_private_webhooks_are_an_explicit_setting_limited_to_ports
        tests/broker/delivery/test_push_egress.py
            ::test_R3_1_a_name_rebound_to_loopback_after_registration_is_not_dialled
            ::test_R3_1_a_stored_webhook_spelling_loopback_is_not_dialled
API8 Security misconfiguration
    TLS 1.2; a session cookie without its flags; pages that may be framed; errors that leak:
        tests/broker/api/test_mtls.py::test_C2_1_tls_1_2_is_refused
        test_C2_2_a_customer_cannot_reach_another_customers_consents_or_session (here)
        tests/broker/api/test_limits.py::test_T7_every_refusal_has_the_one_error_shape
    answers that may be cached or sniffed, a Server banner, documentation pages loading a CDN,
    the portal's description published to anyone:
        tests/broker/api/test_transport_hardening.py
            ::test_T7_api_answers_carry_no_store_nosniff_hsts_and_no_server_banner
            ::test_T7_api_serves_no_swagger_ui_or_redoc_in_any_mode
            ::test_T7_portal_answers_are_hardened_and_publish_no_description
    malformed input (a time without an offset, NUL and other controls, bidirectional
    overrides in names) and bugs: a 422 or a 500 in the one error shape, nothing stored, the
    connection kept:
        tests/broker/api/test_malformed_input.py
            ::test_T7_a_time_without_a_utc_offset_is_refused_clearly
            ::test_T7_control_characters_in_a_feed_are_refused_and_nothing_is_stored
            ::test_R3_3_control_characters_and_bidi_overrides_in_a_registration_are_refused
            ::test_T7_an_unexpected_exception_answers_the_error_shape_and_keeps_the_connection
        tests/broker/portal/test_portal_input.py
            ::test_T7_nul_in_a_sign_in_or_a_consent_request_is_refused_and_nothing_is_stored
            ::test_T7_a_bug_in_the_portal_answers_the_error_shape_and_keeps_the_connection
        tests/broker/storage/test_text_guard.py
            ::test_T7_text_with_a_control_character_is_never_stored
API9 Improper inventory management
    a route the document does not name, or names wrongly:
        tests/broker/api/test_openapi_schemathesis.py
            ::test_T7_C1_8_openapi_documents_every_operation_and_its_error_family
            ::test_T7_every_operation_as_a_third_party_with_a_bound_token
API10 Unsafe consumption of APIs
    forged frames from a concentrator; a policy engine that answers nonsense; a forged
    deletion acknowledgement:
        tests/connectors/mdms/test_ingest.py
        tests/broker/policy/test_decision.py
            ::test_engine_undefined_error_or_nonsense_denies_with_an_audit_entry
        tests/broker/delivery/test_push.py::test_R3_4_a_forged_or_wrong_acknowledgement_is_refused
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from broker.customers.accounts import Accounts
from broker.portal.serve import running_portal
from broker.regulator.service import MAX_LIMIT
from broker.release.feeds import MAX_DAYS
from broker.runtime.wiring import open_ca, open_consents
from tests.broker.api.test_limits import bearer, error_of, issued, operator, running_broker
from tests.broker.oauth.conftest import Broker, Party
from tests.broker.parties import enrol
from tests.consent_ledger.factories import request

pytestmark = pytest.mark.timeout(60)
PASSWORDS = {"alice": "correct horse battery", "bob": "another long passphrase"}
CUSTOMERS = {"alice": "CUST-0000001", "bob": "CUST-0000002"}
DAYS_30 = timedelta(days=30)
FEED = {"purpose": "personalised_service", "categories": ["consumption"],
        "granularity": "hourly", "scope": "subject", "subject": "CUST-0000001"}  # fmt: skip


@dataclass
class World:
    broker: Broker
    portal: str
    acme: Party
    rival: Party
    ops: Party


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_broker(tmp_path_factory.mktemp("owasp")) as broker:
        rt = broker.rt
        accounts = Accounts(rt.audit, rt.clock, rt.hasher)
        with rt.db.transaction() as session:
            enrol(session, CUSTOMERS.values())
            for user, password in PASSWORDS.items():
                accounts.create(session, user, CUSTOMERS[user], password, "test")
        acme, rival = broker.onboard("acme"), broker.onboard("rival")
        with running_portal(rt, "test") as port:
            yield World(broker, f"https://127.0.0.1:{port}", acme, rival, operator(broker))


@contextmanager
def _customer(world: World, user: str) -> Iterator[httpx.Client]:
    ca = ssl.create_default_context(cafile=str(world.broker.ca_pem))
    with httpx.Client(base_url=world.portal, timeout=10, verify=ca) as client:
        signed = client.post("/login", data={"username": user, "password": PASSWORDS[user]})
        assert signed.status_code == 303, signed.text
        yield client


def _consent(world: World, customer: str) -> str:
    rt = world.broker.rt
    given = request(customer=customer, recipient="acme", expires_at=rt.clock.now() + DAYS_30)
    with rt.db.transaction() as session:
        return open_consents(rt).give(session, given, "customer").event.consent_id


def test_C2_2_a_customer_cannot_reach_another_customers_consents_or_session(world: World) -> None:
    bobs = _consent(world, CUSTOMERS["bob"])
    with _customer(world, "alice") as alice:
        cookie = alice.cookies["broker_session"]
        assert alice.get("/me/consents").json() == []
        assert alice.get("/me/consents", params={"customer": CUSTOMERS["bob"]}).json() == []
        assert alice.post(f"/me/consents/{bobs}/withdraw").status_code == 404
        history = alice.get("/me/access", params={"subject": CUSTOMERS["bob"]}).json()
        hers = world.broker.rt.hasher(CUSTOMERS["alice"])
        assert history["entries"] and {e["subject"] for e in history["entries"]} == {hers}
        page = alice.get("/oauth/authorize")
    payload, mac = cookie.rsplit(".", 1)
    _, expires = base64.urlsafe_b64decode(payload).decode().rsplit("|", 1)
    as_bob = base64.urlsafe_b64encode(f"{CUSTOMERS['bob']}|{expires}".encode()).decode()
    with _customer(world, "alice") as forger:
        forger.cookies.set("broker_session", f"{as_bob}.{mac}")
        assert forger.get("/me/consents").status_code == 401
        assert forger.post(f"/me/consents/{bobs}/withdraw").status_code == 401
    with _customer(world, "bob") as bob:
        signed = bob.post("/login", data={"username": "bob", "password": PASSWORDS["bob"]})
        mine = bob.get("/me/consents").json()
    assert [(c["consent_id"], c["status"]) for c in mine] == [(bobs, "active")]
    flags = signed.headers["set-cookie"].lower()
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags
    assert (
        page.headers["x-frame-options"] == "DENY"
        and "default-src 'none'" in page.headers["content-security-policy"]
    )


def test_C2_2_a_third_party_cannot_read_or_stop_another_recipients_feed(world: World) -> None:
    broker, acme, rival = world.broker, world.acme, world.rival
    acme_auth, rival_auth = bearer(broker, acme), bearer(broker, rival)
    with broker.client(acme) as client:
        made = client.post("/v1/feeds", json=FEED, headers=acme_auth)
    assert made.status_code == 201, made.text
    feed_id = made.json()["feed_id"]
    with broker.client(rival) as client:
        refused = [
            client.get(f"/v1/feeds/{feed_id}", headers=rival_auth),
            client.get(f"/v1/feeds/{feed_id}/data", headers=rival_auth),
            client.delete(f"/v1/feeds/{feed_id}", headers=rival_auth),
        ]
        stolen = client.get(f"/v1/feeds/{feed_id}", headers=acme_auth)  # acme's token, not cert
    for answer in refused:
        assert error_of(answer, 404, "NotFound") == f"no feed {feed_id}"
    assert "another client certificate" in error_of(stolen, 401, "InvalidToken")
    with broker.client(acme) as client:
        assert client.get(f"/v1/feeds/{feed_id}", headers=acme_auth).json()["status"] == "active"


def test_R3_3_mass_assignment_is_refused_on_every_body(world: World) -> None:
    broker, acme = world.broker, world.acme
    auth = bearer(broker, acme)
    with broker.client(acme) as client:
        feeds = [
            client.post("/v1/feeds", json=FEED | extra, headers=auth)
            for extra in ({"recipient": "rival"}, {"status": "stopped"}, {"feed_id": "fd_mine"})
        ]
        role = client.post(
            "/v1/recipients/acme/certificate", json={"csr_pem": "a CSR", "role": "regulator"}
        )
    with broker.client(world.ops) as client:
        status = client.post("/v1/recipients/rival/suspend", json={"reason": "x", "status": "ok"})
    for refused in (*feeds, role, status):
        assert "Extra inputs are not permitted" in error_of(refused, 422, "InvalidRequest")
    with broker.rt.db.transaction() as session:  # nothing was issued for the refused request
        issued_to_acme = [
            c.name for c in open_ca(broker.rt).certificates(session) if c.name == "acme"
        ]
    assert len(issued_to_acme) == 1


def test_T7_unbounded_page_sizes_are_refused(world: World) -> None:
    broker = world.broker
    auth = bearer(broker, world.acme)
    with broker.client(world.acme) as client:
        feed_id = client.post("/v1/feeds", json=FEED, headers=auth).json()["feed_id"]
        pages = [
            client.get(f"/v1/feeds/{feed_id}/data", params={"limit": n}, headers=auth)
            for n in (MAX_DAYS + 1, 10**9, 0)
        ]
        deliveries = client.get("/v1/deliveries", params={"limit": 501}, headers=auth)
    with broker.client(issued(broker, "ofgem", "regulator")) as client:
        audit = client.get("/v1/regulator/audit", params={"limit": MAX_LIMIT + 1})
        most = client.get("/v1/regulator/audit", params={"limit": MAX_LIMIT})
    with _customer(world, "alice") as alice:
        access = alice.get("/me/access", params={"limit": 501})
        largest = alice.get("/me/access", params={"limit": 500})
    for refused in (*pages, deliveries, audit, access):
        assert "query.limit" in error_of(refused, 422, "InvalidRequest")
    assert most.status_code == 200 and largest.status_code == 200


def test_C3_2_webhook_urls_are_https_and_only_an_operator_sets_them(world: World) -> None:
    def register(client: httpx.Client, name: str, url: str) -> httpx.Response:
        body = {"recipient_id": name, "display_name": name, "kind": "supplier", "webhook_url": url}
        return client.post("/v1/recipients", json=body)

    with world.broker.client(world.ops) as client:
        refused = [
            register(client, f"hook-{n}", url)
            for n, url in enumerate(
                ["http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "https://"]
            )
        ]
    with world.broker.client(world.acme) as client:
        by_recipient = register(client, "acme-2", "https://acme.example/hook")
    for answer in refused:
        assert "must be an https:// URL with a host" in error_of(answer, 400, "InvalidRecipient")
    assert by_recipient.status_code == 403


def test_the_matrix_names_only_tests_that_exist() -> None:
    """Every test the docstring names is defined: here, or in the module it names."""
    root = Path(__file__).resolve().parents[3]
    module, missing = Path(__file__), []
    for line in (__doc__ or "").splitlines():
        text = line.strip()
        if text.startswith("tests/"):
            path, _, name = text.partition("::")
            module = root / path
            names = [name] if name else []
        elif text.startswith("::"):
            names = [text.removeprefix("::")]
        elif text.startswith("test_"):
            module, names = Path(__file__), [text.split(" ")[0]]
        else:
            continue
        source = module.read_text() if module.exists() else ""
        missing += [f"{module}::{n}" for n in names if f"def {n}(" not in source]
        missing += [] if source else [str(module)]
    assert missing == []
