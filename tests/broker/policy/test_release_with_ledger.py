"""Consent ledger and release policy together, on SQLite and PostgreSQL (X.1332 R3.4, R3.5).

The decision point gets the covering consents from the ledger (``covering_consents``) and decides
with the shipped policy: a withdrawal committed by another process is effective for the very next
decision; expiry is evaluated at decision time, to the second; every decision lands in the
decision log without the customer's reference, and an engine failure lands in the audit log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from broker.audit.log import AuditLog
from broker.audit.models import AuditEntry
from broker.audit.note import NoteSigner
from broker.consent.service import ConsentService
from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.policy.bundle import Bundle
from broker.policy.decision import TABLE, DecisionPoint, Facts, ReleaseRequest
from broker.policy.facts import covering_consents
from broker.rego.engine import EmbeddedEngine, EngineFailure
from broker.storage.db import Database
from consent_ledger import ConsentRequest, ReceiptSigner, notice_hash
from tests.broker.parties import enrol

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HASHER = SubjectHasher(b"k" * 32)
ORIGIN = "test.example/audit"


def _log(clock: FixedClock) -> AuditLog:
    return AuditLog(ORIGIN, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), clock)


def _consent(expires_at: datetime) -> ConsentRequest:
    return ConsentRequest(
        customer="cust-42",
        recipient="tp_app",
        purposes=("personalised_service",),
        categories=("consumption", "generation"),
        granularity="15min",
        expires_at=expires_at,
        notice_hash=notice_hash(b"the notice shown"),
        collection_method="oauth_consent_page",
        controller="utility.example",
        history_days=30,
        identified=True,
        explicit=True,
    )


def _request(categories: tuple[str, ...] = ("consumption",)) -> ReleaseRequest:
    return ReleaseRequest(
        "tp_app", "third_party", "personalised_service", categories, "hourly",
        T0 - timedelta(days=3), T0, "cust-42",
    )  # fmt: skip


def _decide(point: DecisionPoint, service: ConsentService, db: Database, req: ReleaseRequest,
            at: datetime) -> bool:  # fmt: skip
    with db.transaction() as session:
        state = service.refresh(session)
        decision = point.decide(Facts(req, covering_consents(state, req, at), at))
        point.flush(session)
    return decision.allow


def _point(shipped: Bundle, clock: FixedClock) -> DecisionPoint:
    engine = EmbeddedEngine(compiled=(shipped.decision_path(),))
    engine.load(shipped.policies(), shipped.data)
    return DecisionPoint(engine, "1", shipped.decision_path(), clock, HASHER, _log(clock))


def test_withdrawal_is_effective_for_the_very_next_decision(
    database: Database, shipped: Bundle
) -> None:
    clock = FixedClock(T0)
    signer_key = Ed25519PrivateKey.generate()
    customer_side = ConsentService(_log(clock), clock, HASHER, ReceiptSigner(signer_key))
    broker_side = ConsentService(_log(clock), clock, HASHER, ReceiptSigner(signer_key))
    point = _point(shipped, clock)
    with database.transaction() as session:
        enrol(session, ["cust-42"], ["tp_app"])
        given = customer_side.give(session, _consent(T0 + timedelta(days=90)), "customer")
    assert _decide(point, broker_side, database, _request(), T0)
    assert _decide(point, broker_side, database, _request(("consumption", "generation")), T0)
    assert not _decide(point, broker_side, database, _request(("consumption", "power_quality")), T0)
    with database.transaction() as session:
        customer_side.withdraw(session, given.event.consent_id, "customer")
    assert not _decide(point, broker_side, database, _request(), T0)
    with database.transaction() as session:
        rows = session.execute(select(TABLE.c.allow, TABLE.c.input_json)).all()
    assert [r.allow for r in rows] == [True, True, False, False]
    assert all("cust-42" not in r.input_json for r in rows)
    assert all(HASHER("cust-42") in r.input_json for r in rows)


def test_expiry_is_evaluated_at_decision_time_to_the_second(
    database: Database, shipped: Bundle
) -> None:
    clock = FixedClock(T0)
    service = ConsentService(
        _log(clock), clock, HASHER, ReceiptSigner(Ed25519PrivateKey.generate())
    )
    point = _point(shipped, clock)
    expires = T0 + timedelta(days=1)
    with database.transaction() as session:
        enrol(session, ["cust-42"], ["tp_app"])
        service.give(session, _consent(expires), "customer")
    assert _decide(point, service, database, _request(), expires - timedelta(seconds=1))
    assert not _decide(point, service, database, _request(), expires)


class _Broken:
    name = "broken"

    def load(self, modules: object, data: object) -> None:
        return None

    def evaluate(self, path: str, input_doc: object) -> object:
        raise EngineFailure("builtin error: divide by zero")


def test_an_engine_failure_denies_and_is_audited(database: Database) -> None:
    clock = FixedClock(T0)
    log = _log(clock)
    point = DecisionPoint(_Broken(), "4", "broker/release/decision", clock, HASHER, log)
    decision = point.decide(Facts(_request(), [], T0))
    assert not decision.allow
    with database.transaction() as session:
        point.flush(session)
    with database.transaction() as session:
        entries = AuditEntry.metadata.tables["audit_entry"]
        types = session.execute(select(entries.c.event_type)).scalars().all()
        logged = session.execute(select(TABLE.c.decision_id, TABLE.c.allow)).all()
    assert "policy.engine_failure" in types
    assert [(r.decision_id, r.allow) for r in logged] == [(decision.decision_id, False)]
