"""Wiring: the engine the settings choose, loaded with the active signed revision.

No active or no verifiable revision means no policy: the decision point then answers every
request with a denial (``engine_error``) and an audit entry, never with data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.audit.events import AuditSink
from broker.errors import BrokerError
from broker.kit.clock import Clock
from broker.kit.ids import SubjectHasher
from broker.policy.bundle import Bundle, load_bundle, shipped_bundle_dir
from broker.policy.decision import DecisionPoint
from broker.policy.engine import EmbeddedEngine, EngineFailure, PolicyEngine
from broker.policy.store import NoActivePolicy, PolicyStore
from broker.settings import Settings
from consent_ledger import Vocabulary

DEFAULT_DECISION = "broker/release/decision"


class NoPolicyEngine:
    """Stands where no verified policy could be loaded: every evaluation fails (deny)."""

    name = "none"

    def __init__(self, why: str) -> None:
        self.why = why

    def load(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:  # noqa: ARG002
        raise EngineFailure(self.why)

    def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Any:  # noqa: ARG002
        raise EngineFailure(self.why)


def make_engine(settings: Settings, decision_path: str = DEFAULT_DECISION) -> PolicyEngine:
    """The embedded engine (the decision compiled for its VM unless ``policy_compiled`` is
    off), or the OPA server the settings name."""
    if settings.policy_engine == "opa":
        from connectors.opa.client import OpaServerEngine

        return OpaServerEngine.from_settings(settings)
    return EmbeddedEngine(compiled=(decision_path,) if settings.policy_compiled else ())


def open_decision_point(
    settings: Settings,
    audit: AuditSink,
    clock: Clock,
    hasher: SubjectHasher,
    engine: PolicyEngine | None = None,
    bundle: Bundle | None = None,
) -> DecisionPoint:
    """A decision point on the active revision (or the bundle given, for replays)."""
    try:
        if bundle is None:
            bundle = PolicyStore(settings, audit, clock).load_active()
        engine = engine or make_engine(settings, bundle.decision_path())
        engine.load(bundle.policies(), bundle.data)
    except BrokerError as exc:  # no verified policy loaded: fail closed
        return DecisionPoint(
            NoPolicyEngine(exc.message), "none", DEFAULT_DECISION, clock, hasher, audit
        )
    return DecisionPoint(engine, bundle.revision, bundle.decision_path(), clock, hasher, audit)


def activate_shipped_if_none(
    settings: Settings, db_transaction: Any, audit: AuditSink, clock: Clock, actor: str
) -> str | None:
    """On a data directory without a policy, activate the shipped bundle (``broker init``):
    out of the box, releases are decided by the shipped, tested policy. Returns the revision
    activated, or None when one was already active."""
    store = PolicyStore(settings, audit, clock)
    if store.active_revision() is not None:
        return None
    with db_transaction() as session:
        return store.activate(shipped_bundle_dir(), session, actor).revision


def catalogue_vocabulary(bundle: Bundle) -> Vocabulary:
    """The purposes and categories a consent may name: those of the purpose catalogue."""
    catalogue = bundle.data["broker"]["catalogue"]
    return Vocabulary(frozenset(catalogue["purposes"]), frozenset(catalogue["categories"]))


def active_vocabulary(settings: Settings, audit: AuditSink, clock: Clock) -> Vocabulary:
    """The active revision's vocabulary; the shipped bundle's before any is active."""
    try:
        bundle = PolicyStore(settings, audit, clock).load_active()
    except NoActivePolicy:
        bundle = load_bundle(shipped_bundle_dir())
    return catalogue_vocabulary(bundle)
