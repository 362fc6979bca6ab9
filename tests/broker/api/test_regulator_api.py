"""Regulator access over real mutual TLS: only a ``regulator`` certificate reads
audit entries (by customer pseudonym, type and time), downloads an export that verifies offline,
and reads metrics; each read is itself audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.audit.events import AuditEvent
from broker.audit.verify import verify_bundle
from broker.ca.authority import CertificateAuthority, Issued
from broker.kit.clock import FixedClock, SystemClock
from broker.runtime.core import (
    Runtime,
    audit_public_key_path,
    init_keys,
    prepare_data_dir,
    upgrade_schema,
)
from tests.broker.fakes import settings_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    runtime = Runtime.open(settings, FixedClock(datetime.now(UTC)))
    yield runtime
    runtime.close()


def _issue(rt: Runtime, name: str, role: str) -> Issued:
    with rt.db.transaction() as session:
        return CertificateAuthority(rt.settings, rt.clock).issue(
            session, rt.audit, role=role, name=name, actor="test"
        )


def _client(rt: Runtime, url: str, who: Issued) -> httpx.Client:
    ctx = client_context(rt.settings.ca_dir / "ca.pem", who.cert_path, who.key_path)
    return httpx.Client(base_url=url, verify=ctx, timeout=10)


def test_regulator_reads_by_pseudonym_exports_and_metrics(rt: Runtime, tmp_path: Path) -> None:
    alice, bob = rt.hasher("CUST-A"), rt.hasher("CUST-B")
    with rt.db.transaction() as session:
        rt.audit.record(
            session,
            [
                AuditEvent("consent.given", "customer", alice, {"recipient": "acme"}),
                AuditEvent("consent.given", "customer", bob, {"recipient": "other"}),
                AuditEvent("consent.withdrawn", "customer", alice, {"recipient": "acme"}),
            ],
        )
    regulator, third = _issue(rt, "ofgem", "regulator"), _issue(rt, "acme", "third-party")
    with running(build(rt, "test")) as port:
        url = f"https://127.0.0.1:{port}"
        with _client(rt, url, third) as client:
            refused = client.get("/v1/regulator/metrics")
            assert refused.status_code == 403
            assert refused.json()["error"] == "Forbidden"
        with _client(rt, url, regulator) as client:
            page = client.get("/v1/regulator/audit", params={"subject": alice}).json()
            assert [e["type"] for e in page["entries"]] == ["consent.given", "consent.withdrawn"]
            assert page["next_after_seq"] is None
            by_type = client.get(
                "/v1/regulator/audit", params={"type": "consent.given", "limit": 1}
            ).json()
            assert len(by_type["entries"]) == 1 and by_type["next_after_seq"] is not None
            after = client.get(
                "/v1/regulator/audit",
                params={"type": "consent.given", "after_seq": by_type["next_after_seq"]},
            ).json()
            assert after["entries"][0]["subject"] == bob
            future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            assert (
                client.get("/v1/regulator/audit", params={"since": future}).json()["entries"] == []
            )
            bad = client.get("/v1/regulator/audit", params={"subject": "CUST-A"})
            assert bad.status_code == 422 and "pseudonym" in bad.json()["detail"]
            assert client.get("/v1/regulator/audit", params={"limit": 100_000}).status_code == 422
            export = client.get("/v1/regulator/export", params={"type": "consent.given"})
            assert export.status_code == 200
            (tmp_path / "export.jsonl").write_bytes(export.content)
            metrics = client.get("/v1/regulator/metrics").json()
    vkey = audit_public_key_path(rt.settings).read_text().strip()
    assert verify_bundle(tmp_path / "export.jsonl", vkey).entries == 2
    assert metrics["audit_entries"] >= 3
    assert "regulator.read" in {e["type"] for e in _all(rt)}


def _all(rt: Runtime) -> list[dict[str, object]]:
    with rt.db.engine.connect() as conn:
        return [json.loads(r[0]) for r in conn.execute(text("SELECT body FROM audit_entry"))]


def test_T7_a_client_over_its_request_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "var", api_rate_per_s=0.2, api_burst=3)
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    CertificateAuthority.create(settings, SystemClock())
    runtime = Runtime.open(settings, FixedClock(datetime.now(UTC)))
    try:
        regulator, other = (
            _issue(runtime, "ofgem", "regulator"),
            _issue(runtime, "ombud", "regulator"),
        )
        with running(build(runtime, "test")) as port:
            url = f"https://127.0.0.1:{port}"
            with _client(runtime, url, regulator) as client:
                answers = [client.get("/v1/regulator/metrics") for _ in range(4)]
            with _client(runtime, url, other) as client:
                unaffected = client.get("/v1/regulator/metrics")
    finally:
        runtime.close()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert answers[-1].json()["error"] == "Throttled"
    assert unaffected.status_code == 200  # one client's flood does not stop another


def test_T7_a_sequence_number_past_64_bits_is_refused_clearly(rt: Runtime) -> None:
    """Schemathesis found ``after_seq=89482238066410353852416`` answered 500 (the driver's
    OverflowError); it is a 422 naming the parameter, and the next request works."""
    regulator = _issue(rt, "ofgem", "regulator")
    with (
        running(build(rt, "test")) as port,
        _client(rt, f"https://127.0.0.1:{port}", regulator) as c,
    ):
        huge = c.get("/v1/regulator/audit", params={"after_seq": 89482238066410353852416})
        last = c.get("/v1/regulator/audit", params={"after_seq": 2**63 - 1})
    assert huge.status_code == 422 and "after_seq" in huge.json()["detail"], huge.text
    assert last.status_code == 200 and last.json()["entries"] == []
