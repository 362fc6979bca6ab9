"""The decision point: facts in, a decision out, always total and failing closed.

Every release asks ``DecisionPoint.decide``. It builds the policy input from the facts (the
customer only as a keyed hash), asks the engine for ``data.broker.release.decision`` and checks
the answer's shape. Undefined, an engine failure or a malformed answer is a denial with reason
``engine_undefined`` / ``engine_error`` / ``engine_malformed`` and an audit entry
(``policy.engine_failure``): an engine that fails never releases data (X.1332 R3.4, R3.5).

Each decision gets an id and is kept, with the input as evaluated, in the decision log
(``policy_decision``): release audit entries point to it and ``broker policy diff`` replays it.
Decisions are returned at once and their records written in groups by ``DecisionLog.write``
in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.kit.clock import Clock, to_us
from broker.kit.ids import SUBJECT_HASH_PREFIX, SubjectHasher, new_id
from broker.policy.models import INPUT_PURGED, PolicyDecision
from broker.rego.engine import UNDEFINED, EngineFailure, PolicyEngine

DECISION_FIELDS = (
    "allow",
    "tier",
    "granularity",
    "fields_drop",
    "retention_days",
    "reasons",
    "obligations",
)
TABLE = PolicyDecision.metadata.tables["policy_decision"]

# CPython's C encoder built once, keys sorted, compact, ASCII: the input text is evaluated and
# logged as is, so one input always has one text (json.dumps would build an encoder per call).
_c_encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, None, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False
)


def _encode_input(doc: Mapping[str, Any]) -> str:
    return "".join(_c_encoder(doc, 0))


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Decision:
    decision_id: str
    revision: str
    allow: bool
    tier: str | None
    granularity: str | None
    fields_drop: tuple[str, ...]
    retention_days: int
    reasons: tuple[Reason, ...]
    obligations: tuple[Mapping[str, Any], ...]
    consent_ids: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "revision": self.revision,
            "allow": self.allow,
            "tier": self.tier,
            "granularity": self.granularity,
            "fields_drop": list(self.fields_drop),
            "retention_days": self.retention_days,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "obligations": [dict(o) for o in self.obligations],
            "consent_ids": list(self.consent_ids),
        }


@dataclass(frozen=True)
class ReleaseRequest:
    """What a recipient asks for. ``subject`` is the customer's reference for a household's
    data (scope ``subject``) and None for aggregates (scope ``aggregate``)."""

    recipient_id: str
    recipient_kind: str
    purpose: str
    categories: tuple[str, ...]
    granularity: str
    period_from: datetime
    period_to: datetime
    subject: str | None = None
    recipient_status: str = "active"
    tier: str | None = None

    @property
    def scope(self) -> str:
        return "aggregate" if self.subject is None else "subject"


@dataclass(frozen=True)
class Facts:
    """Everything the policy may know, and nothing it may not: the request, the consents that
    may cover it (from the ledger, in the policy's shape: ``consent_fact``), the time, and the
    supply contract where the purpose rests on one."""

    request: ReleaseRequest
    consents: Sequence[Mapping[str, Any]]
    now: datetime
    contract: Mapping[str, Any] | None = None


def consent_fact(
    consent_id: str,
    recipient: str,
    purposes: Iterable[str],
    categories: Iterable[str],
    granularity: str,
    history_days: int,
    identified: bool,
    explicit: bool,
    given_at: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """A consent as the policy reads it (no customer in it: the request names the subject)."""
    return {
        "consent_id": consent_id,
        "recipient": recipient,
        "purposes": sorted(purposes),
        "categories": sorted(categories),
        "granularity": granularity,
        "history_days": history_days,
        "identified": identified,
        "explicit": explicit,
        "given_s": int(given_at.timestamp()),
        "expires_s": int(expires_at.timestamp()),
    }


def build_input(facts: Facts, hasher: Callable[[str], str]) -> dict[str, Any]:
    """The policy input. Times are whole seconds (``now_s``): policies read no clock."""
    req = facts.request
    request: dict[str, Any] = {
        "scope": req.scope,
        "categories": list(req.categories),
        "granularity": req.granularity,
        "from_s": int(req.period_from.timestamp()),
        "to_s": int(req.period_to.timestamp()),
    }
    if req.subject is not None:
        subject = req.subject
        request["subject"] = subject if subject.startswith(SUBJECT_HASH_PREFIX) else hasher(subject)
    if req.tier is not None:
        request["tier"] = req.tier
    doc: dict[str, Any] = {
        "now_s": int(facts.now.timestamp()),
        "recipient": {
            "id": req.recipient_id,
            "kind": req.recipient_kind,
            "status": req.recipient_status,
        },
        "purpose": req.purpose,
        "request": request,
        "consents": [dict(c) for c in facts.consents],
    }
    if facts.contract is not None:
        doc["contract"] = dict(facts.contract)
    return doc


def _denial(decision_id: str, revision: str, code: str, message: str) -> Decision:
    return Decision(decision_id, revision, False, None, None, (), 0, (Reason(code, message),), ())


def parse_result(decision_id: str, revision: str, value: Any) -> Decision:
    """The engine's answer as a ``Decision``; a malformed one is a denial, never a guess."""
    if value is UNDEFINED:
        return _denial(decision_id, revision, "engine_undefined", "the policy gave no decision")
    try:
        if not isinstance(value, Mapping) or set(DECISION_FIELDS) - set(value):
            raise TypeError("missing fields")
        allow = value["allow"]
        if allow is not True and allow is not False:
            raise TypeError("allow is not a boolean")
        reasons = tuple(Reason(str(r["code"]), str(r["message"])) for r in value["reasons"])
        obligations = tuple(dict(o) for o in value["obligations"])
        tier = value["tier"]
        granularity = value["granularity"]
        if allow and (not isinstance(tier, str) or not isinstance(granularity, str)):
            raise TypeError("an allow without tier or granularity")
        retention = value["retention_days"]
        if not isinstance(retention, int) or isinstance(retention, bool):
            raise TypeError("retention_days is not an integer")
        return Decision(
            decision_id,
            revision,
            allow,
            tier,
            granularity,
            tuple(str(f) for f in value["fields_drop"]),
            retention,
            reasons,
            obligations,
            tuple(str(c) for c in value.get("consent_ids", [])),
        )
    except (TypeError, KeyError, ValueError) as exc:
        return _denial(
            decision_id, revision, "engine_malformed", f"the policy's answer is malformed: {exc}"
        )


@dataclass(frozen=True)
class DecisionRecord:
    decision_id: str
    at_us: int
    revision: str
    engine: str
    purpose: str
    recipient: str
    input_json: str
    decision: Decision

    def row(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "at_us": self.at_us,
            "revision": self.revision,
            "engine": self.engine,
            "purpose": self.purpose,
            "recipient": self.recipient,
            "allow": self.decision.allow,
            "tier": self.decision.tier,
            "input_json": self.input_json,
            "result_json": json.dumps(self.decision.as_json(), sort_keys=True),
        }


@dataclass
class DecisionPoint:
    engine: PolicyEngine
    revision: str
    decision_path: str
    clock: Clock
    hasher: SubjectHasher
    audit: AuditSink
    pending: list[DecisionRecord] = field(default_factory=list)
    failures: list[AuditEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the same customers recur in a feed: one HMAC each, not one per decision
        self._subject_hash: Callable[[str], str] = lru_cache(maxsize=1 << 16)(self.hasher)

    def decide(self, facts: Facts) -> Decision:
        """Decide, and keep the record until ``flush`` writes it (with any failure entries)."""
        doc = build_input(facts, self._subject_hash)
        input_json = _encode_input(doc)
        decision_id = new_id("dc")
        try:
            evaluate_json = getattr(self.engine, "evaluate_json", None)
            if evaluate_json is not None:
                value = evaluate_json(self.decision_path, input_json)
            else:
                value = self.engine.evaluate(self.decision_path, doc)
        except EngineFailure as exc:
            decision = _denial(decision_id, self.revision, "engine_error", exc.message)
        else:
            decision = parse_result(decision_id, self.revision, value)
        if decision.reasons and decision.reasons[0].code.startswith("engine_"):
            self.failures.append(
                AuditEvent(
                    "policy.engine_failure",
                    "system",
                    doc["request"].get("subject"),
                    {
                        "decision_id": decision_id,
                        "revision": self.revision,
                        "engine": self.engine.name,
                        "code": decision.reasons[0].code,
                        "message": decision.reasons[0].message[:500],
                    },
                )
            )
        self.pending.append(
            DecisionRecord(
                decision_id,
                to_us(self.clock.now()),
                self.revision,
                self.engine.name,
                facts.request.purpose,
                facts.request.recipient_id,
                input_json,
                decision,
            )
        )
        return decision

    def flush(self, session: Session) -> int:
        """Write the pending records and failure entries in the caller's transaction."""
        records, failures = self.pending, self.failures
        self.pending, self.failures = [], []
        DecisionLog.write(session, records)
        if failures:
            self.audit.record(session, failures)
        return len(records)


class DecisionLog:
    @staticmethod
    def write(session: Session, records: Sequence[DecisionRecord]) -> None:
        if records:
            session.execute(insert(TABLE), [r.row() for r in records])

    @staticmethod
    def read(session: Session, limit: int | None = None) -> list[dict[str, Any]]:
        query = (  # inputs erased by the retention job cannot be replayed
            TABLE.select()
            .where(TABLE.c.input_json != INPUT_PURGED)
            .order_by(TABLE.c.at_us, TABLE.c.decision_id)
        )
        if limit is not None:
            query = query.limit(limit)
        return [dict(row._mapping) for row in session.execute(query)]
