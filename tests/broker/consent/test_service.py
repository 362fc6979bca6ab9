"""The consent service on SQLite and PostgreSQL (R3.4, R3.5): events stored and entered in the
audit log with the customer as a keyed hash, receipts that verify, withdrawal seen by the next
query of any service instance, expiry at the boundary, refusals that write nothing, and a
chain check that names the first event changed in the database."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from broker.consent.errors import (
    ConsentConflict,
    ConsentLedgerBroken,
    ConsentNotFound,
    ConsentRefused,
)
from broker.consent.service import ConsentService
from broker.errors import BrokerError
from broker.kit.clock import FixedClock
from broker.storage.db import Database
from consent_ledger import (
    ConsentChanges,
    Expire,
    Give,
    Kind,
    Operation,
    Withdraw,
    verify_receipt,
)
from tests.broker.consent.conftest import HASHER
from tests.consent_ledger.factories import T0, release, request

EXPIRES = T0 + timedelta(days=30)
US = timedelta(microseconds=1)
RELEASE = release()


def _counts(db: Database) -> tuple[int, int]:
    with db.transaction() as session:
        events = session.execute(text("SELECT count(*) FROM consent_event")).scalar_one()
        audited = session.execute(text("SELECT count(*) FROM audit_entry")).scalar_one()
    return int(events), int(audited)


def _give(db: Database, service: ConsentService, **changes: Any) -> str:
    with db.transaction() as session:
        return service.give(session, request(**changes), "test").event.consent_id


def test_R3_4_a_given_consent_is_stored_audited_and_receipted(
    database: Database, service: ConsentService
) -> None:
    with database.transaction() as session:
        given = service.give(session, request(), "cli:officer")
    event, receipt = given.event, given.receipt
    claims = verify_receipt(receipt, service.signer.public_key)
    assert (claims["consent_id"], claims["seq"], claims["kind"]) == (event.consent_id, 1, "given")
    assert claims["event_hash"] == event.hash.hex()
    with database.transaction() as session:
        row = session.execute(text("SELECT * FROM consent_event")).mappings().one()
        audit = session.execute(text("SELECT event_type, body FROM audit_entry")).one()
    assert row["body"].encode() == event.body
    assert (row["seq"], row["kind"], row["customer_ref"], row["recipient"]) == (
        1,
        "given",
        "C-1",
        "acme-energy",
    )
    assert audit.event_type == "consent.given"
    entry = json.loads(audit.body)
    assert entry["subject"] == HASHER("C-1") and "C-1" not in audit.body  # keyed hash only
    assert entry["actor"] == "cli:officer"
    assert entry["details"] == {
        "consent_id": event.consent_id,
        "event_hash": event.hash.hex(),
        "purposes": ["personalised_service"],
        "recipient": "acme-energy",
        "seq": 1,
    }


def test_R3_4_withdrawal_is_effective_for_the_next_query_of_every_service(
    database: Database, service: ConsentService, new_service: Callable[[], ConsentService]
) -> None:
    deciding = new_service()  # another process, with its own cached state
    consent = _give(database, service)
    with database.transaction() as session:
        assert [t.consent_id for t in deciding.covering(session, **RELEASE)] == [consent]
    with database.transaction() as session:
        withdrawn = service.withdraw(session, consent, "customer:C-1")
    event, receipt = withdrawn.event, withdrawn.receipt
    assert event.kind is Kind.withdrawn
    with database.transaction() as session:
        assert deciding.covering(session, **RELEASE) == []
        assert service.covering(session, **RELEASE) == []
    assert verify_receipt(receipt, service.signer.public_key)["kind"] == "withdrawn"


def test_R3_4_expiry_is_evaluated_at_decision_time_and_recorded_when_due(
    database: Database, service: ConsentService, clock: FixedClock
) -> None:
    consent = _give(database, service)
    clock.advance(EXPIRES - T0 - US)
    with database.transaction() as session:
        assert len(service.covering(session, **RELEASE)) == 1  # one microsecond before
        assert service.expire_due(session) == []
    clock.advance(US)
    with database.transaction() as session:
        assert service.covering(session, **RELEASE) == []  # at the expiry instant
        (expired,) = service.expire_due(session)
        assert service.expire_due(session) == []
    assert (expired.event.consent_id, expired.event.kind, expired.event.at) == (
        consent,
        Kind.expired,
        EXPIRES,
    )
    with database.transaction() as session:
        assert [r.status.value for r in service.consents(session, everything=True)] == ["expired"]
        assert service.consents(session) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"expires_at": T0 - timedelta(days=1)}, "is not after"),
        ({"expires_at": T0 + timedelta(days=366)}, "more than 365 days after"),
        ({"purposes": ["reselling"]}, "unknown purpose 'reselling'"),
        ({"categories": ["bank_details"]}, "unknown category 'bank_details'"),
        ({"granularity": "1s"}, "unknown granularity '1s'"),
        ({"purposes": []}, "at least one purpose is needed"),
        ({"history_days": -1}, "history days must be 0 to 3660, not -1"),
        ({"customer": "C-404"}, "unknown customer 'C-404'"),
        ({"recipient": "nobody-co"}, "unregistered recipient 'nobody-co'"),
    ],
    ids=[
        "expiry_past",
        "expiry_beyond_max",
        "unknown_purpose",
        "unknown_category",
        "unknown_granularity",
        "no_purpose",
        "negative_history",
        "unknown_customer",
        "unregistered_recipient",
    ],
)
def test_R3_4_an_invalid_consent_is_refused_and_writes_nothing(
    database: Database, service: ConsentService, changes: dict[str, Any], message: str
) -> None:
    _give(database, service)
    before = _counts(database)
    with pytest.raises(ConsentRefused, match=message), database.transaction() as session:
        service.give(session, request(**changes), "test")
    assert _counts(database) == before == (1, 1)


@pytest.mark.parametrize(
    ("operations", "error", "message"),
    [
        ([Withdraw("cn_missing")], ConsentNotFound, "no consent cn_missing"),
        ([Expire("cn_missing")], ConsentNotFound, "no consent cn_missing"),
        ([Expire("{first}")], ConsentRefused, "it cannot expire at"),
        ([Withdraw("{first}"), Withdraw("{first}")], ConsentConflict, "was withdrawn at"),
        ([Give(request()), Give(request(purposes=["x"]))], ConsentRefused, "unknown purpose"),
    ],
    ids=[
        "withdraw_unknown",
        "expire_unknown",
        "expire_early",
        "withdraw_twice",
        "one_bad_in_a_group",
    ],
)
def test_R3_4_a_refused_operation_or_group_writes_nothing(
    database: Database,
    service: ConsentService,
    operations: list[Operation],
    error: type[BrokerError],
    message: str,
) -> None:
    first = _give(database, service)
    resolved = [
        type(op)(first) if isinstance(op, Withdraw | Expire) and op.consent_id == "{first}" else op
        for op in operations
    ]
    before = _counts(database)
    with pytest.raises(error, match=message), database.transaction() as session:
        service.append_many(session, resolved, "test")
    assert _counts(database) == before == (1, 1)


def test_modify_changes_scope_and_keeps_the_chain(
    database: Database, service: ConsentService, clock: FixedClock
) -> None:
    consent = _give(database, service)
    clock.advance(timedelta(hours=1))
    with database.transaction() as session:
        event = service.modify(
            session, consent, ConsentChanges(categories=["generation"]), "customer:C-1"
        ).event
        assert service.covering(session, **RELEASE) == []
        assert len(service.covering(session, **(RELEASE | {"category": "generation"}))) == 1
    with database.transaction() as session:
        history = service.history(session, consent)
        assert [e.kind for e in history] == [Kind.given, Kind.modified]
        assert history[1] == event
        assert service.verify(session).first_bad_seq is None
        with pytest.raises(ConsentNotFound, match="no consent cn_nope"):
            service.history(session, "cn_nope")


def test_a_rolled_back_append_is_never_seen(database: Database, service: ConsentService) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        service.give(session, request(), "test")
        raise RuntimeError("the caller's job failed after the append")
    with database.transaction() as session:
        assert service.covering(session, **RELEASE) == []
        event = service.give(session, request(), "test").event
    assert event.seq == 1
    with database.transaction() as session:
        assert service.verify(session).events == 1


def test_load_state_equals_the_refreshed_cache(database: Database, service: ConsentService) -> None:
    with database.transaction() as session:
        ops: list[Operation] = [Give(request(customer=f"C-{i}")) for i in range(1, 6)]
        appended = service.append_many(session, ops, "test")
    assert [a.terms.customer for a in appended] == [f"C-{i}" for i in range(1, 6)]
    with database.transaction() as session:
        loaded = service.load_state(session)
        cached = service.refresh(session)
    assert (loaded.head_seq, loaded.head_hash) == (cached.head_seq, cached.head_hash)
    assert list(loaded.records()) == list(cached.records())


def test_concurrent_appenders_keep_one_chain(
    database: Database, new_service: Callable[[], ConsentService]
) -> None:
    services = [new_service(), new_service()]
    failures: list[BaseException] = []

    def work(service: ConsentService, customer: str) -> None:
        try:
            for _ in range(10):
                with database.transaction() as session:
                    service.give(session, request(customer=customer), "test")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(s, f"C-{i}")) for i, s in enumerate(services)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with database.transaction() as session:
        assert services[0].verify(session) == services[1].verify(session)
        report = services[0].verify(session)
    assert (report.events, report.first_bad_seq) == (20, None)


# ---- the chain in the database -------------------------------------------------------------


def _three(database: Database, service: ConsentService) -> None:
    for customer in ("C-1", "C-2", "C-3"):
        _give(database, service, customer=customer)


def _sql(database: Database, statement: str) -> None:
    with database.transaction() as session:
        session.execute(text(statement))


def test_R3_4_the_chain_names_an_event_whose_body_was_changed_in_the_database(
    database: Database, service: ConsentService
) -> None:
    _three(database, service)
    with database.transaction() as session:
        assert service.verify(session).first_bad_seq is None
    _sql(database, "UPDATE consent_event SET body = replace(body, 'hourly', '15min') WHERE seq = 2")
    with database.transaction() as session:
        report = service.verify(session)
    assert (report.first_bad_seq, report.problem) == (2, "hash does not match the body")


@pytest.mark.parametrize(
    ("statement", "seq", "problem"),
    [
        ("DELETE FROM consent_event WHERE seq = 2", 2, "sequence number 3 where 2 belongs"),
        ("UPDATE consent_event SET customer_ref = 'C-9' WHERE seq = 3", 3, "columns do not"),
        ("UPDATE consent_event SET body = 'garbage' WHERE seq = 1", 1, "cannot be read"),
        ("UPDATE consent_event SET prev_hash = hash WHERE seq = 3", 3, "previous hash"),
        ("DELETE FROM audit_entry WHERE seq = 1", 2, "no audit entry records this event"),
    ],
    ids=["deleted", "column_changed", "unreadable", "relinked", "audit_entry_missing"],
)
def test_the_chain_names_the_first_stored_event_that_does_not_hold(
    database: Database, service: ConsentService, statement: str, seq: int, problem: str
) -> None:
    _three(database, service)
    _sql(database, statement)
    with database.transaction() as session:
        report = service.verify(session)
    assert report.first_bad_seq == seq
    assert report.problem is not None and problem in report.problem


def test_a_chain_rewritten_with_fresh_hashes_is_caught_by_the_audit_log(
    database: Database, service: ConsentService
) -> None:
    """Someone who edits an event and recomputes every hash after it still cannot change the
    hashes the audit log (a signed Merkle tree) holds."""
    from consent_ledger.events import event_hash

    _three(database, service)
    with database.transaction() as session:
        rows = session.execute(text("SELECT seq, body FROM consent_event ORDER BY seq")).all()
        prev = bytes(32)
        for seq, body in rows:
            edited = body.replace('"hourly"', '"15min"') if seq == 2 else body
            new_hash = event_hash(prev, edited.encode())
            session.execute(
                text(
                    "UPDATE consent_event SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s"
                ),
                {"b": edited, "p": prev, "h": new_hash, "s": seq},
            )
            prev = new_hash
    with database.transaction() as session:
        report = service.verify(session)
    assert (report.first_bad_seq, report.problem) == (
        2,
        "hash differs from the one entered in the audit log",
    )


def test_a_broken_ledger_fails_closed_for_queries(
    database: Database, service: ConsentService, new_service: Callable[[], ConsentService]
) -> None:
    _three(database, service)
    _sql(database, "UPDATE consent_event SET body = 'garbage' WHERE seq = 2")
    with pytest.raises(ConsentLedgerBroken), database.transaction() as session:
        new_service().covering(session, **RELEASE)


def test_own_events_are_learned_at_commit_not_read_back(
    database: Database, service: ConsentService, new_service: Callable[[], ConsentService]
) -> None:
    """The appending service applies its events when the transaction commits; a rolled-back
    group is dropped (``test_a_rolled_back_append_is_never_seen``); another service reads."""
    _give(database, service)
    _sql(database, "UPDATE consent_event SET body = 'unreadable' WHERE seq = 1")
    with database.transaction() as session:
        assert len(service.covering(session, **RELEASE)) == 1  # never read the row back
        with pytest.raises(ConsentLedgerBroken):
            new_service().covering(session, **RELEASE)
