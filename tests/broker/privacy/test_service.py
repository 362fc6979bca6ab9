"""Pseudonym keys per recipient domain and the budget ledger, on SQLite and PostgreSQL (C3.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from broker.errors import KeyError_
from broker.kit.clock import FixedClock
from broker.privacy.service import SPENDS, BudgetLedger, PseudonymKeys, derive_domain_key
from broker.storage.db import Database
from tests.broker.fakes import RecordingAuditSink

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MASTER = bytes(range(32))


def test_C3_3_domain_keys_are_stable_per_domain_and_unrelated_across_domains(
    database: Database,
) -> None:
    keys = PseudonymKeys(MASTER, RecordingAuditSink(), FixedClock(T0))
    with database.transaction() as session:
        a1 = keys.key_for(session, "acme-energy")
        b1 = keys.key_for(session, "uni-research")
    with database.transaction() as session:
        a2 = keys.key_for(session, "acme-energy")
    assert a1 == a2 and a1.version == 1
    assert a1.key != b1.key and len(a1.key) == 32
    assert a1.key != MASTER


def test_C3_3_rekey_moves_the_domain_to_an_unlinkable_key_and_is_audited(
    database: Database,
) -> None:
    audit = RecordingAuditSink()
    keys = PseudonymKeys(MASTER, audit, FixedClock(T0))
    with database.transaction() as session:
        before = keys.key_for(session, "acme-energy")
        after = keys.rekey(session, "acme-energy", "cli:officer")
    with database.transaction() as session:
        current = keys.key_for(session, "acme-energy")
    assert (after.version, current.version) == (2, 2)
    assert after.key == current.key != before.key
    assert audit.types() == ["privacy.pseudonym_rekeyed"]
    assert derive_domain_key(MASTER, "acme-energy", 1) == before.key


def test_the_database_holds_no_key_material(database: Database) -> None:
    keys = PseudonymKeys(MASTER, RecordingAuditSink(), FixedClock(T0))
    with database.transaction() as session:
        key = keys.key_for(session, "acme-energy").key
        rows = session.execute(text("SELECT * FROM pseudonym_domain")).all()
    dumped = repr(rows).encode()
    assert key.hex().encode() not in dumped and MASTER.hex().encode() not in dumped
    assert key not in dumped


def test_short_master_key_is_refused() -> None:
    with pytest.raises(KeyError_, match="256 bits"):
        PseudonymKeys(b"short", RecordingAuditSink(), FixedClock(T0))


def test_budget_window_is_rolling_and_append_only(database: Database) -> None:
    clock = FixedClock(T0)
    audit = RecordingAuditSink()
    ledger = BudgetLedger(audit, clock)
    with database.transaction() as session:
        ledger.record(session, "ems-grid", "rl_1", 0.5, 0.0, "laplace", "household_day", "system",
                      at=T0 - timedelta(days=31))  # fmt: skip
        ledger.record(session, "ems-grid", "rl_2", 0.25, 0.0, "laplace", "household_day", "system",
                      at=T0 - timedelta(days=2))  # fmt: skip
        ledger.record(session, "acme", "rl_3", 1.0, 0.0, "laplace", "household_day", "system")
    with database.transaction() as session:
        window = ledger.window(session, "ems-grid")
        assert [row["release_id"] for row in window] == ["rl_2"]
        assert window[0]["epsilon"] == 0.25 and window[0]["at"] == T0 - timedelta(days=2)
        assert len(session.execute(select(SPENDS)).all()) == 3
    assert audit.types() == ["privacy.budget_spent"] * 3
