"""The retention job on a broker with real readings, on SQLite and PostgreSQL (C3.3, C1.7):
what is past its period is purged (readings deleted, delivery bodies and decision inputs
erased, expired portal rows deleted), what is not stays untouched, each run is one audit entry
with counts and no personal data, and the audit log still verifies afterwards."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from broker.audit.models import AuditEntry
from broker.customers.models import PortalSession, SignInFailures
from broker.delivery.models import Delivery, DeliveryStatus
from broker.delivery.settings import PushSettings
from broker.kit.clock import to_us
from broker.policy.decision import DecisionLog
from broker.policy.models import INPUT_PURGED, PolicyDecision
from broker.release.service import ReleaseOptions
from broker.retention.service import EVENT_TYPE, Retention, Schedule
from broker.runtime.wiring import open_outbox
from connectors.mdms.models import ReadingDay
from connectors.mdms.readings import read_days
from tests.broker.release.conftest import CUSTOMER, DAY0, NOW, Broker, broker  # noqa: F401

pytestmark = pytest.mark.timeout(120)

FIRST_DAY = (DAY0.date() - dt.date(1970, 1, 1)).days


def _retention(b: Broker, **days: int) -> Retention:
    return Retention(b.rt.db, b.rt.audit, b.clock, Schedule(**days))


def _meter(b: Broker) -> str:
    return b.fleet.meters[0].system_title.hex().upper()


def _stored_days(b: Broker) -> list[int]:
    with b.rt.db.transaction() as session:
        return [d.day for d in read_days(session, b.rt.data_keys, _meter(b), 0, 1 << 30)]


def _count(b: Broker, model: Any) -> int:
    with b.rt.db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def _entries(b: Broker) -> list[dict[str, Any]]:
    with b.rt.db.transaction() as session:
        rows = session.execute(
            select(AuditEntry.body).where(col(AuditEntry.event_type) == EVENT_TYPE)  # type: ignore[call-overload]
        )
        return [json.loads(body) for (body,) in rows]


def test_C3_3_expired_readings_are_unreadable_and_unexpired_ones_untouched(b: Broker) -> None:
    """NOW is the third day: with one day kept (besides today), the first day is due."""
    assert _stored_days(b) == [FIRST_DAY, FIRST_DAY + 1]
    meters = len(b.fleet.meters)
    dry = _retention(b, readings_days=1).run("test", dry_run=True)
    assert dry.counts["readings"] == meters
    assert _stored_days(b) == [FIRST_DAY, FIRST_DAY + 1]  # a dry run changes nothing
    assert _entries(b) == []  # and is not audited

    report = _retention(b, readings_days=1).run("test")
    assert report.counts["readings"] == meters
    assert _stored_days(b) == [FIRST_DAY + 1]
    assert _count(b, ReadingDay) == meters
    again = _retention(b, readings_days=1).run("test")
    assert again.counts["readings"] == 0  # idempotent


def test_C3_3_readings_within_the_default_period_are_kept(b: Broker) -> None:
    report = _retention(b).run("test")
    assert report.total == 0
    assert _stored_days(b) == [FIRST_DAY, FIRST_DAY + 1]


def test_C3_3_delivery_bodies_past_retention_are_erased_and_the_rest_kept(b: Broker) -> None:
    outbox = open_outbox(b.rt, PushSettings())
    with b.rt.db.transaction() as session:
        old = outbox.enqueue(session, recipient="acme", url="https://acme.example/hook",
                             kind="release", body=b"old page", media_type="text/csv",
                             subject=CUSTOMER)  # fmt: skip
    b.clock.advance(dt.timedelta(days=31))
    with b.rt.db.transaction() as session:
        new = outbox.enqueue(session, recipient="acme", url="https://acme.example/hook",
                             kind="release", body=b"new page", media_type="text/csv",
                             subject=CUSTOMER)  # fmt: skip
    report = _retention(b, delivery_bodies_days=30).run("test")
    assert report.counts["delivery_bodies"] == 1
    with b.rt.db.transaction() as session:
        gone, kept = session.get(Delivery, old), session.get(Delivery, new)
        assert gone is not None and kept is not None
        assert gone.body_sealed == b""
        assert gone.status == DeliveryStatus.dead
        assert "retention" in (gone.last_error or "")
        assert len(gone.body_sha256) == 64  # the proof of what was queued stays
        assert kept.body_sealed != b""
        assert kept.status == DeliveryStatus.pending


def test_C3_3_decision_inputs_past_retention_are_erased_and_no_longer_replayed(b: Broker) -> None:
    pipeline = b.pipeline()
    with b.rt.db.transaction() as session:
        request = pipeline.request_for(session, "ems-grid", "grid_operations", ("consumption",),
                                       "hourly", DAY0, DAY0 + dt.timedelta(days=1))  # fmt: skip
    pipeline.run(b.rt.db, request, ReleaseOptions(groups=("F-001", "F-002"), epsilon=1.0))
    decisions = _count(b, PolicyDecision)
    assert decisions >= 1
    assert _retention(b, decision_inputs_days=1).run("test").counts["decision_inputs"] == 0
    b.clock.advance(dt.timedelta(days=2))
    report = _retention(b, decision_inputs_days=1).run("test")
    assert report.counts["decision_inputs"] == decisions
    with b.rt.db.transaction() as session:
        rows = session.execute(select(PolicyDecision.input_json)).all()  # type: ignore[call-overload]
        assert {r[0] for r in rows} == {INPUT_PURGED}
        assert DecisionLog.read(session) == []
    assert _count(b, PolicyDecision) == decisions  # the outcomes stay, for metrics


def test_expired_portal_sessions_and_idle_throttle_rows_are_deleted(b: Broker) -> None:
    now = to_us(NOW)
    day = 86_400 * 1_000_000
    with b.rt.db.transaction() as session:
        session.add(PortalSession(id_hash="a" * 64, customer_ref=CUSTOMER,
                                  created_us=now - 9 * day, expires_us=now - 8 * day))  # fmt: skip
        session.add(PortalSession(id_hash="b" * 64, customer_ref=CUSTOMER,
                                  created_us=now, expires_us=now + day))  # fmt: skip
        ended = now - 8 * day
        session.add(SignInFailures(key="account:old", failures=3,
                                   wait_until_us=ended, last_failure_us=ended))  # fmt: skip
        session.add(SignInFailures(key="account:new", failures=3,
                                   wait_until_us=now + 60, last_failure_us=now))  # fmt: skip
    report = _retention(b, portal_days=7).run("test")
    assert (report.counts["portal_sessions"], report.counts["sign_in_throttle"]) == (1, 1)
    with b.rt.db.transaction() as session:
        assert session.get(PortalSession, "b" * 64) is not None
        assert session.get(PortalSession, "a" * 64) is None
        assert session.get(SignInFailures, "account:new") is not None
        assert session.get(SignInFailures, "account:old") is None


def test_C3_3_each_run_is_one_audit_entry_with_counts_and_no_personal_data(b: Broker) -> None:
    report = _retention(b, readings_days=1).run("cli:operator")
    (entry,) = _entries(b)
    assert entry["actor"] == "cli:operator"
    assert entry.get("subject") is None
    assert entry["details"]["counts"] == report.counts
    assert entry["details"]["keep_days"]["readings"] == 1
    text = json.dumps(entry)
    assert CUSTOMER not in text and _meter(b) not in text


def test_a_worker_run_that_purged_nothing_is_not_audited(b: Broker) -> None:
    report = _retention(b).run("system:retention", audit_if_nothing=False)
    assert (report.total, report.audit_seq) == (0, None)
    assert _entries(b) == []


def test_a_retention_of_less_than_a_day_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one day"):
        Schedule(readings_days=0)


@pytest.fixture
def b(broker: Broker) -> Broker:  # noqa: F811
    return broker
