"""The retention job: what the broker keeps of its own data, for how long, and the purge.

Each kind of personal data the broker stores has a retention period (``Schedule``, from the
``BROKER_RETENTION_*`` settings) and a way to be purged:

* ``readings`` (``reading_day``): a meter's days older than ``readings_days`` whole UTC days
  before today are deleted. Crypto-shredding is not used for them: a customer's data key seals
  every day of theirs, expired or not, so destroying it would take the current days too;
  destroying keys stays the erasure path (``broker customers erase``).
* ``delivery_bodies`` (``delivery.body_sealed``): the sealed webhook body is erased (set empty)
  ``delivery_bodies_days`` after it was queued; the row keeps the body's SHA-256 and the
  recipient's signed receipt as proof of what was sent, and a delivery still pending is
  dead-lettered.
* ``decision_inputs`` (``policy_decision.input_json``): the input is replaced by
  ``INPUT_PURGED`` after ``decision_inputs_days``; the decision's outcome stays for metrics and
  ``broker policy diff`` no longer replays it.
* ``portal_sessions`` and ``sign_in_throttle``: expired sessions, and throttle rows whose wait
  and last failure are over, are deleted ``portal_days`` after they ended.

Kept on purpose: the audit log (its entries hold only keyed hashes, and it must stay
verifiable), consent events and receipts (the proof of consent outlives the consent), the
privacy-budget ledger, and release records (what was released to whom).

A run purges every kind in one transaction with one ``retention.purged`` audit event that
holds the counts per kind and the periods, never personal data. A dry run counts what is due
and changes nothing (and is not audited).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from broker.audit.events import AuditEvent, AuditSink
from broker.customers.models import PortalSession, SignInFailures
from broker.delivery.models import Delivery, DeliveryStatus
from broker.kit.clock import Clock, to_us
from broker.policy.models import INPUT_PURGED, PolicyDecision
from broker.settings import Settings
from broker.storage.db import Database
from connectors.mdms.models import ReadingDay

EVENT_TYPE = "retention.purged"
_DAY_US = 86_400 * 1_000_000


class Kind(StrEnum):
    readings = "readings"
    delivery_bodies = "delivery_bodies"
    decision_inputs = "decision_inputs"
    portal_sessions = "portal_sessions"
    sign_in_throttle = "sign_in_throttle"


HOW = {
    Kind.readings: "deleted",
    Kind.delivery_bodies: "body erased",
    Kind.decision_inputs: "input erased",
    Kind.portal_sessions: "deleted",
    Kind.sign_in_throttle: "deleted",
}


@dataclass(frozen=True)
class Schedule:
    """Retention periods in days (see ``broker.settings.Settings.retention_*``)."""

    readings_days: int = 730
    delivery_bodies_days: int = 30
    decision_inputs_days: int = 365
    portal_days: int = 7

    def __post_init__(self) -> None:
        for name, days in self.as_dict().items():
            if days < 1:
                raise ValueError(f"retention of {name} must be at least one day, not {days}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        return cls(
            readings_days=settings.retention_readings_days,
            delivery_bodies_days=settings.retention_delivery_bodies_days,
            decision_inputs_days=settings.retention_decision_inputs_days,
            portal_days=settings.retention_portal_days,
        )

    def days(self, kind: Kind) -> int:
        if kind is Kind.readings:
            return self.readings_days
        if kind is Kind.delivery_bodies:
            return self.delivery_bodies_days
        if kind is Kind.decision_inputs:
            return self.decision_inputs_days
        return self.portal_days

    def as_dict(self) -> dict[str, int]:
        return {
            "readings": self.readings_days,
            "delivery_bodies": self.delivery_bodies_days,
            "decision_inputs": self.decision_inputs_days,
            "portal": self.portal_days,
        }


@dataclass(frozen=True)
class KindReport:
    kind: Kind
    keep_days: int
    before: datetime
    """Data of this kind older than this (or ended before it) was due."""
    count: int
    """Purged (or, in a dry run, due)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "keep_days": self.keep_days,
            "before": self.before.isoformat(),
            "how": HOW[self.kind],
            "count": self.count,
        }


@dataclass
class RunReport:
    at: datetime
    dry_run: bool
    kinds: list[KindReport] = field(default_factory=list)
    audit_seq: int | None = None

    @property
    def counts(self) -> dict[str, int]:
        return {k.kind.value: k.count for k in self.kinds}

    @property
    def total(self) -> int:
        return sum(k.count for k in self.kinds)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "dry_run": self.dry_run,
            "kinds": [k.as_json() for k in self.kinds],
            "total": self.total,
            "audit_seq": self.audit_seq,
        }


@dataclass(frozen=True)
class _Purge:
    """How one kind is counted and purged, given its cutoff in microseconds."""

    kind: Kind
    due: Callable[[int], ColumnElement[bool]]
    """(cutoff_us) -> the rows that are due."""
    purge: Callable[[Session, int], int]


def _readings_due(cutoff_us: int) -> ColumnElement[bool]:
    return col(ReadingDay.day) < cutoff_us // _DAY_US


def _purge_readings(session: Session, cutoff_us: int) -> int:
    result = session.execute(delete(ReadingDay).where(_readings_due(cutoff_us)))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _bodies_due(cutoff_us: int) -> ColumnElement[bool]:
    return and_(col(Delivery.created_us) < cutoff_us, func.length(col(Delivery.body_sealed)) > 0)


def _purge_bodies(session: Session, cutoff_us: int) -> int:
    due = _bodies_due(cutoff_us)
    session.execute(
        update(Delivery)
        .where(due, col(Delivery.status) == DeliveryStatus.pending)
        .values(status=DeliveryStatus.dead, last_error="body erased: past its retention period")
    )
    result = session.execute(update(Delivery).where(due).values(body_sealed=b""))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _inputs_due(cutoff_us: int) -> ColumnElement[bool]:
    return and_(
        col(PolicyDecision.at_us) < cutoff_us, col(PolicyDecision.input_json) != INPUT_PURGED
    )


def _purge_inputs(session: Session, cutoff_us: int) -> int:
    statement = update(PolicyDecision).where(_inputs_due(cutoff_us))
    result = session.execute(statement.values(input_json=INPUT_PURGED))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _sessions_due(cutoff_us: int) -> ColumnElement[bool]:
    return col(PortalSession.expires_us) < cutoff_us


def _purge_sessions(session: Session, cutoff_us: int) -> int:
    result = session.execute(delete(PortalSession).where(_sessions_due(cutoff_us)))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _throttle_due(cutoff_us: int) -> ColumnElement[bool]:
    return and_(
        col(SignInFailures.last_failure_us) < cutoff_us,
        col(SignInFailures.wait_until_us) < cutoff_us,
    )


def _purge_throttle(session: Session, cutoff_us: int) -> int:
    result = session.execute(delete(SignInFailures).where(_throttle_due(cutoff_us)))
    return int(result.rowcount)  # type: ignore[attr-defined]


_PURGES = (
    _Purge(Kind.readings, _readings_due, _purge_readings),
    _Purge(Kind.delivery_bodies, _bodies_due, _purge_bodies),
    _Purge(Kind.decision_inputs, _inputs_due, _purge_inputs),
    _Purge(Kind.portal_sessions, _sessions_due, _purge_sessions),
    _Purge(Kind.sign_in_throttle, _throttle_due, _purge_throttle),
)
_TABLES: dict[Kind, Any] = {
    Kind.readings: ReadingDay,
    Kind.delivery_bodies: Delivery,
    Kind.decision_inputs: PolicyDecision,
    Kind.portal_sessions: PortalSession,
    Kind.sign_in_throttle: SignInFailures,
}


class Retention:
    def __init__(self, db: Database, audit: AuditSink, clock: Clock, schedule: Schedule) -> None:
        self.db = db
        self._audit = audit
        self._clock = clock
        self.schedule = schedule

    def cutoff(self, kind: Kind, now: datetime) -> datetime:
        """Data of ``kind`` from before this is due. Readings count whole UTC days: the days
        kept are today and the ``readings_days`` before it."""
        days = self.schedule.days(kind)
        if kind is Kind.readings:
            today = now.replace(hour=0, minute=0, second=0, microsecond=0)
            return today - timedelta(days=days)
        return now - timedelta(days=days)

    def run(self, actor: str, *, dry_run: bool = False, audit_if_nothing: bool = True) -> RunReport:
        """Purge what is due (or only count it, ``dry_run``), in one transaction with its
        audit event; a run that purged nothing is audited only when ``audit_if_nothing``."""
        now = self._clock.now()
        report = RunReport(now, dry_run)
        with self.db.transaction() as session:
            for purge in _PURGES:
                before = self.cutoff(purge.kind, now)
                cutoff_us = to_us(before)
                if dry_run:
                    query = select(func.count()).select_from(_TABLES[purge.kind])
                    count = int(session.execute(query.where(purge.due(cutoff_us))).scalar_one())
                else:
                    count = purge.purge(session, cutoff_us)
                report.kinds.append(
                    KindReport(purge.kind, self.schedule.days(purge.kind), before, count)
                )
            if not dry_run and (report.total or audit_if_nothing):
                details = {"counts": report.counts, "keep_days": self.schedule.as_dict()}
                (report.audit_seq,) = self._audit.record(
                    session, [AuditEvent(EVENT_TYPE, actor, None, details)]
                )
        return report


def open_retention(db: Database, audit: AuditSink, clock: Clock, settings: Settings) -> Retention:
    """The retention job on a runtime's parts, with the schedule of ``settings``."""
    return Retention(db, audit, clock, Schedule.from_settings(settings))
