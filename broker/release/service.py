"""One release pipeline for every path (ARCHITECTURE §1).

    facts (recipient, purpose, covering consents from the refreshed ledger)
    → decision (its record written in the same transaction)
    → readings through the consent-scoped repository (only after an allowing decision)
    → tier transform with the decided tier, granularity and fields to drop
    → release record (+ member sets as keyed hashes, + the budget spend)
    → ONE ``release.made`` audit entry: decision id, revision, consent ids, manifest digest,
      budget spent.

``release`` runs in the caller's transaction: any failure rolls every step back, so nothing is
released without its record and audit entry. A denial raises ``ReleaseDenied`` (403, with the
reasons and the decision id); a refusal by the transform (budget exceeded, differencing,
thresholds) raises ``ReleaseRefused`` (403). ``run`` opens the transaction itself and keeps the
decision record and a ``release.refused`` audit entry of a denied or refused request (nothing
is released), then raises.

The ``privacy_spend`` row of a dp release comes with its own ``privacy.budget_spent`` entry
(``broker.privacy.service.BudgetLedger``); the ``release.made`` entry names the same spend.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pandas as pd
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.consent.service import ConsentService
from broker.kit.canonical import canonical_text
from broker.kit.clock import Clock, to_us
from broker.kit.ids import SubjectHasher, new_id
from broker.policy.decision import Decision, Facts, ReleaseRequest
from broker.policy.facts import covering_consents
from broker.privacy.service import BudgetLedger, PseudonymKeys
from broker.recipients.models import Recipient
from broker.release.cells import CanonicalCells, CellRequest, CellSpend
from broker.release.errors import PageAlreadyReleased, ReleaseDenied, ReleaseRefused
from broker.release.models import ReleaseGroup, ReleaseRecord
from broker.release.once import is_page_conflict
from broker.release.store import AGGREGATE_TIERS, ReadingsRepository
from broker.storage.db import Database
from deidentify.aggregate import MemberSet, Rules
from deidentify.budget_ad import PRIVACY_UNIT
from deidentify.dp import BudgetRules, BudgetSpend
from deidentify.errors import DeidentifyError, InvalidParameter
from deidentify.frames import CUSTOMER, METER
from deidentify.generalise import DEFAULT_K
from deidentify.manifest import ReleaseManifest
from deidentify.pseudonym import PseudonymKey
from deidentify.tiers import GRANULARITY_S, TierParams, transform

RELEASES = ReleaseRecord.metadata.tables["release"]
GROUPS = ReleaseGroup.metadata.tables["release_group"]


@dataclass(frozen=True)
class Made:
    """What a release hands out, before it is recorded."""

    frame: pd.DataFrame
    manifest: ReleaseManifest
    members: tuple[MemberSet, ...] = ()
    spends: tuple[CellSpend, ...] = ()


@dataclass(frozen=True)
class RecipientInfo:
    kind: str
    status: str


class Decider(Protocol):
    """A ``DecisionPoint``, or the ``LiveDecisionPoint`` that follows activations."""

    def decide(self, facts: Facts) -> Decision: ...

    def flush(self, session: Session) -> int: ...


class RecipientDirectory(Protocol):
    def describe(self, session: Session, recipient_id: str) -> RecipientInfo | None: ...


class RegistryDirectory:
    """Recipients from the registry (``broker.recipients``); unknown → None (denied)."""

    def describe(self, session: Session, recipient_id: str) -> RecipientInfo | None:
        row = session.get(Recipient, recipient_id)
        return None if row is None else RecipientInfo(row.kind, row.status)


@dataclass(frozen=True)
class ReleaseOptions:
    groups: tuple[str, ...] = ()
    """Aggregate requests: the feeders to cover."""
    epsilon: float = 1.0
    delta: float = 0.0
    feed_id: str | None = None
    actor: str | None = None
    """Audit actor; ``recipient:<id>`` when None."""


@dataclass(frozen=True)
class ReleaseConfig:
    budget: BudgetRules = field(default_factory=BudgetRules)
    k: int = DEFAULT_K
    residential: bool = True
    peak_kw: float = 8.0
    """dp: the per-interval clipping bound as a power (8 kW: 2 000 Wh a quarter-hour), turned
    into ``interval_wh`` for the released interval; the day bound stays ``DAY_WH``."""


@dataclass(frozen=True)
class ReleaseResult:
    release_id: str
    decision: Decision
    tier: str
    granularity: str
    frame: pd.DataFrame
    manifest: ReleaseManifest
    manifest_digest: str
    rows: int
    at: datetime
    spend: BudgetSpend | None = None
    audit_seq: int | None = None


def manifest_text(manifest: ReleaseManifest) -> str:
    return canonical_text(manifest.as_json())


class ReleasePipeline:
    def __init__(
        self,
        decisions: Decider,
        consents: ConsentService,
        repository: ReadingsRepository,
        pseudonyms: PseudonymKeys,
        budget: BudgetLedger,
        recipients: RecipientDirectory,
        audit: AuditSink,
        clock: Clock,
        hasher: SubjectHasher,
        config: ReleaseConfig | None = None,
    ) -> None:
        self.decisions = decisions
        self.consents = consents
        self.repository = repository
        self.pseudonyms = pseudonyms
        self.budget = budget
        self.recipients = recipients
        self.audit = audit
        self.clock = clock
        self.hasher = hasher
        self.config = config or ReleaseConfig()
        rules = Rules.of(15, 0.15, 100, self.config.residential)
        self.cells = CanonicalCells(
            repository, budget, rules, self.config.budget, self.config.peak_kw
        )

    def request_for(
        self,
        session: Session,
        recipient_id: str,
        purpose: str,
        categories: Sequence[str],
        granularity: str,
        period_from: datetime,
        period_to: datetime,
        subject: str | None = None,
        tier: str | None = None,
    ) -> ReleaseRequest:
        """A request with the recipient's kind and status from the directory (an unknown
        recipient is asked as kind ``unknown``, status ``unknown``: the policy denies it)."""
        info = self.recipients.describe(session, recipient_id) or RecipientInfo(
            "unknown", "unknown"
        )
        return ReleaseRequest(
            recipient_id, info.kind, purpose, tuple(categories), granularity,
            period_from, period_to, subject, info.status, tier,
        )  # fmt: skip

    def run(
        self, db: Database, request: ReleaseRequest, options: ReleaseOptions | None = None
    ) -> ReleaseResult:
        """``release`` in a transaction of its own; a denial or refusal keeps its decision
        record and audit entry (nothing is released), then raises."""
        stopped: ReleaseDenied | ReleaseRefused | None = None
        with db.transaction() as session:
            try:
                return self.release(session, request, options)
            except (ReleaseDenied, ReleaseRefused) as exc:
                stopped = exc
        raise stopped

    def release(
        self, session: Session, request: ReleaseRequest, options: ReleaseOptions | None = None
    ) -> ReleaseResult:
        options = options or ReleaseOptions()
        at = self.clock.now()
        state = self.consents.refresh(session)
        decision = self.decisions.decide(Facts(request, covering_consents(state, request, at), at))
        self.decisions.flush(session)
        actor = options.actor or f"recipient:{request.recipient_id}"
        subject = None if request.subject is None else self.hasher(request.subject)
        if not decision.allow:
            self._refused(session, request, decision, actor, subject, "denied")
            raise ReleaseDenied(decision)
        assert decision.tier is not None and decision.granularity is not None
        release_id = new_id("rl")
        try:
            made = self._made(session, request, decision, options, release_id, at)
        except DeidentifyError as exc:
            self._refused(session, request, decision, actor, subject, str(exc))
            raise ReleaseRefused(decision, str(exc)) from exc
        return self._record(
            session, request, decision, options, made, at, actor, subject, release_id
        )

    def _made(
        self, session: Session, request: ReleaseRequest, decision: Decision,
        options: ReleaseOptions, release_id: str, at: datetime,
    ) -> Made:  # fmt: skip
        """The release's frame: aggregates from the canonical cells, a household's data through
        its tier's transform."""
        assert decision.tier is not None and decision.granularity is not None
        if decision.tier in AGGREGATE_TIERS:
            if request.subject is not None:
                raise InvalidParameter(f"a {decision.tier} release covers groups, not a customer")
            cells = CellRequest(
                decision.tier, GRANULARITY_S[decision.granularity], options.groups,
                request.period_from, request.period_to, options.epsilon, options.delta,
            )  # fmt: skip
            served = self.cells.serve(session, decision, cells, release_id, at)
            return Made(served.frame, served.manifest, served.members, served.spends)
        if request.subject is None:
            raise InvalidParameter(f"a {decision.tier} release is one customer's data")
        readings, households = self.repository.household(
            session, decision, request.subject, request.period_from, request.period_to
        )
        params = self._params(session, request, decision)
        done = transform(decision.tier, readings, households, params)
        return Made(done.frame, done.manifest)

    def _params(self, session: Session, request: ReleaseRequest, decision: Decision) -> TierParams:
        assert decision.tier is not None and decision.granularity is not None
        key: PseudonymKey | None = None
        fields_drop: tuple[str, ...] = decision.fields_drop
        if decision.tier == "pseudonymised":
            dk = self.pseudonyms.key_for(session, request.recipient_id)
            key = PseudonymKey(dk.domain, dk.key, dk.version)
            # the catalogue lists the identifiers among the fields to drop because the tier's
            # obligation replaces them by the recipient domain's pseudonyms: keep the pseudonyms
            fields_drop = tuple(f for f in fields_drop if f not in (METER, CUSTOMER))
        return TierParams(
            granularity=decision.granularity,
            fields_drop=fields_drop,
            pseudonym_key=key,
            k=self.config.k,
            recipient=request.recipient_id,
        )

    def _refused(
        self,
        session: Session,
        request: ReleaseRequest,
        decision: Decision,
        actor: str,
        subject: str | None,
        why: str,
    ) -> None:
        details = {
            "recipient": request.recipient_id,
            "purpose": request.purpose,
            "decision_id": decision.decision_id,
            "revision": decision.revision,
            "reasons": [r.code for r in decision.reasons] if not decision.allow else [],
            "why": why[:500],
        }
        self.audit.record(session, [AuditEvent("release.refused", actor, subject, details)])

    def _insert_release(
        self, session: Session, request: ReleaseRequest, decision: Decision,
        options: ReleaseOptions, release_id: str, text: str, digest: str, rows: int, at: datetime,
    ) -> None:  # fmt: skip
        """The release row; a second release of a feed's page is refused by the unique
        (feed_id, period_from_us) index (``broker.release.once``)."""
        assert decision.tier is not None
        session.execute(
            insert(RELEASES).values(
                release_id=release_id,
                recipient=request.recipient_id,
                purpose=request.purpose,
                decision_id=decision.decision_id,
                revision=decision.revision,
                consent_ids=json.dumps(list(decision.consent_ids)),
                tier=decision.tier,
                manifest_json=text,
                manifest_digest=digest,
                rows=rows,
                feed_id=options.feed_id,
                at_us=to_us(at),
                period_from_us=to_us(request.period_from),
                period_to_us=to_us(request.period_to),
            )
        )

    def _record(
        self,
        session: Session,
        request: ReleaseRequest,
        decision: Decision,
        options: ReleaseOptions,
        made: Made,
        at: datetime,
        actor: str,
        subject: str | None,
        release_id: str,
    ) -> ReleaseResult:
        assert decision.tier is not None and decision.granularity is not None
        text = manifest_text(made.manifest)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        rows = len(made.frame)
        try:
            self._insert_release(session, request, decision, options, release_id, text, digest,
                                 rows, at)  # fmt: skip
        except IntegrityError as exc:  # another request or process released this page first
            if not is_page_conflict(exc):
                raise
            raise PageAlreadyReleased(
                f"feed {options.feed_id}'s page from {request.period_from.isoformat()} was "
                "released by a concurrent request or broker process; ask again with the same "
                "cursor for its release id and the next cursor"
            ) from exc
        members = made.members
        if members:
            session.execute(
                insert(GROUPS),
                [
                    {
                        "release_id": release_id,
                        "seq": i,
                        "recipient": request.recipient_id,
                        "group_name": m.group,
                        "start_us": to_us(m.start.to_pydatetime()),
                        "end_us": to_us(m.end.to_pydatetime()),
                        "members_json": json.dumps(sorted(m.members)),
                    }
                    for i, m in enumerate(members)
                ],
            )
        spend: BudgetSpend | None = None
        budget: dict[str, Any] | None = None
        for cell in made.spends:
            self.budget.record(
                session, request.recipient_id, release_id, cell.epsilon, cell.delta,
                cell.mechanism, PRIVACY_UNIT, actor, at=at, cell=cell.cell,
            )  # fmt: skip
            spend = BudgetSpend(cell.cell, at, cell.epsilon, cell.delta, cell.mechanism)
        if made.spends:
            cells = [cell.cell for cell in made.spends]
            budget = {"epsilon": str(made.spends[0].epsilon), "delta": str(made.spends[0].delta),
                      "cells": cells}  # fmt: skip
        details: dict[str, Any] = {
            "release_id": release_id,
            "recipient": request.recipient_id,
            "purpose": request.purpose,
            "tier": decision.tier,
            "granularity": decision.granularity,
            "decision_id": decision.decision_id,
            "revision": decision.revision,
            "consent_ids": list(decision.consent_ids),
            "manifest_sha256": digest,
            "rows": rows,
            "budget_spent": budget,
            "feed_id": options.feed_id,
        }
        seq = self.audit.record(session, [AuditEvent("release.made", actor, subject, details)])
        return ReleaseResult(
            release_id, decision, decision.tier, decision.granularity, made.frame, made.manifest,
            digest, rows, at, spend, seq[0] if seq else None,
        )  # fmt: skip
