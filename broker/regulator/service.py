"""What a regulator reads: audit entries by subject, type and time, exports in
the foundation's bundle format, and metrics across the broker.

Entries name customers only by keyed hash (``hs1:...``), so a regulator asks about a customer by
that pseudonym (``broker keys`` / the customer's own access history give it); the regulator never
needs, or gets, a customer's reference. Filters on type and time use the log's indexes; the
subject and recipient filters read entry bodies within that window, bounded by ``limit``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlmodel import Session

from broker.audit.models import AuditEntry
from broker.consent.models import ConsentEventRow
from broker.delivery import deletion
from broker.delivery.models import Delivery
from broker.kit.clock import to_us
from broker.policy.decision import TABLE as DECISIONS
from broker.privacy.service import SPENDS
from broker.regulator.errors import BadQuery
from broker.release.models import ReleaseRecord
from connectors.mdms.models import IngestTally

ENTRIES = AuditEntry.metadata.tables["audit_entry"]
RELEASES = ReleaseRecord.metadata.tables["release"]
DELIVERIES = Delivery.metadata.tables["delivery"]
MAX_LIMIT = 1_000


@dataclass(frozen=True)
class AuditQuery:
    types: tuple[str, ...] = ()
    subject: str | None = None
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = -1
    limit: int = 100

    def check(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
        if self.subject is not None and not self.subject.startswith("hs1:"):
            raise BadQuery("subject is a customer pseudonym (hs1:...), never a customer reference")
        if self.since and self.until and self.since >= self.until:
            raise BadQuery("since must be before until")


def audit_entries(session: Session, query: AuditQuery) -> tuple[list[dict[str, Any]], int | None]:
    """Entries matching ``query`` in sequence order after ``after_seq``; and the cursor for the
    next page (None when this page ends the log)."""
    query.check()
    found: list[dict[str, Any]] = []
    last = query.after_seq
    for seq, body in _scan(session, query):
        last = seq
        entry = json.loads(body)
        if query.subject is not None and entry.get("subject") != query.subject:
            continue
        if query.recipient is not None and not _names_recipient(entry, query.recipient):
            continue
        found.append(entry)
        if len(found) == query.limit:
            return found, last
    return found, None


def _scan(session: Session, query: AuditQuery, chunk: int = 2_000) -> Iterator[tuple[int, str]]:
    after = query.after_seq
    while True:
        stmt = select(ENTRIES.c.seq, ENTRIES.c.body).where(ENTRIES.c.seq > after)
        if query.types:
            stmt = stmt.where(ENTRIES.c.event_type.in_(query.types))
        if query.since is not None:
            stmt = stmt.where(ENTRIES.c.at_us >= to_us(query.since))
        if query.until is not None:
            stmt = stmt.where(ENTRIES.c.at_us < to_us(query.until))
        rows = session.execute(stmt.order_by(ENTRIES.c.seq).limit(chunk)).all()
        if not rows:
            return
        for seq, body in rows:
            yield int(seq), str(body)
        after = int(rows[-1][0])


def _names_recipient(entry: dict[str, Any], recipient: str) -> bool:
    details = entry.get("details") or {}
    return recipient in (details.get("recipient"), details.get("recipient_id")) or entry.get(
        "actor"
    ) in (f"cert:{recipient}", f"recipient:{recipient}")


def metrics(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Counts across the broker for the regulator's dashboard; deletions are overdue relative
    to ``now`` (default: the wall clock)."""
    decisions = session.execute(
        select(DECISIONS.c.purpose, DECISIONS.c.tier, DECISIONS.c.allow, func.count()).group_by(
            DECISIONS.c.purpose, DECISIONS.c.tier, DECISIONS.c.allow
        )
    ).all()
    allowed: dict[str, dict[str, int]] = {}
    denied: dict[str, int] = {}
    for purpose, tier, allow, count in decisions:
        if allow:
            allowed.setdefault(purpose, {})[tier] = allowed.get(purpose, {}).get(tier, 0) + count
        else:
            denied[purpose] = denied.get(purpose, 0) + count
    consent_table = ConsentEventRow.metadata.tables["consent_event"]
    consents = dict(
        session.execute(
            select(consent_table.c.kind, func.count()).group_by(consent_table.c.kind)
        ).all()
    )
    tally = IngestTally.metadata.tables["ingest_tally"]
    outcomes = dict(
        session.execute(
            select(tally.c.outcome, func.sum(tally.c.frames)).group_by(tally.c.outcome)
        ).all()
    )
    budget = session.execute(
        select(SPENDS.c.recipient, func.sum(SPENDS.c.epsilon), func.count()).group_by(
            SPENDS.c.recipient
        )
    ).all()
    entries = session.execute(text("SELECT count(*) FROM audit_entry")).scalar_one()
    releases: dict[str, dict[str, int]] = {}
    for purpose, tier, count in session.execute(
        select(RELEASES.c.purpose, RELEASES.c.tier, func.count()).group_by(
            RELEASES.c.purpose, RELEASES.c.tier
        )
    ).all():
        releases.setdefault(str(purpose), {})[str(tier)] = int(count)
    pushes = dict(
        session.execute(
            select(DELIVERIES.c.status, func.count()).group_by(DELIVERIES.c.status)
        ).all()
    )
    return {
        "releases_by_purpose_and_tier": releases,
        "deletions": deletion.counts(session, now or datetime.now(UTC)),
        "push_deliveries_by_status": {str(k): int(v) for k, v in pushes.items()},
        "decisions_allowed_by_purpose_and_tier": allowed,
        "decisions_denied_by_purpose": denied,
        "consent_events_by_kind": {str(k): int(v) for k, v in consents.items()},
        "ingest_frames_rejected_by_reason": {
            str(k): int(v) for k, v in outcomes.items() if k not in ("accepted", "duplicate")
        },
        "ingest_frames_accepted": int(outcomes.get("accepted", 0)),
        "privacy_budget_spent_by_recipient": {
            str(r): {"epsilon": float(e), "releases": int(n)} for r, e, n in budget
        },
        "audit_entries": int(entries),
    }
