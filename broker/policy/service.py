"""Wiring: the engine the settings choose, loaded with the active signed revision.

No active or no verifiable revision means no policy: the decision point then answers every
request with a denial (``engine_error``) and an audit entry, never with data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlmodel import Session

from broker.audit.events import AuditSink
from broker.errors import BrokerError, ConfigurationError
from broker.kit.clock import Clock
from broker.kit.ids import SubjectHasher
from broker.policy.bundle import Bundle, load_bundle, shipped_bundle_dir
from broker.policy.decision import Decision, DecisionPoint, Facts
from broker.policy.errors import NoActivePolicy
from broker.policy.store import PolicyStore
from broker.rego.engine import EmbeddedEngine, EngineFailure, PolicyEngine
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


EngineFactory = Callable[[str], PolicyEngine]
"""Builds an engine for a bundle's decision path. The runtime picks one from the settings
(``broker.runtime.wiring.policy_engines``): the embedded engine or the OPA server."""


def embedded_engines(compiled: bool = True) -> EngineFactory:
    """The embedded engine, the decision compiled for its VM unless ``compiled`` is off."""
    return lambda decision_path: EmbeddedEngine(compiled=(decision_path,) if compiled else ())


def _default_engines(settings: Settings) -> EngineFactory:
    if settings.policy_engine != "embedded":  # never fall back silently from the engine named
        raise ConfigurationError(
            f"the {settings.policy_engine!r} policy engine is handed in by the runtime"
        )
    return embedded_engines(settings.policy_compiled)


def open_decision_point(
    settings: Settings,
    audit: AuditSink,
    clock: Clock,
    hasher: SubjectHasher,
    engine: PolicyEngine | None = None,
    bundle: Bundle | None = None,
    engines: EngineFactory | None = None,
) -> DecisionPoint:
    """A decision point on the active revision (or the bundle given, for replays), on
    ``engine``, or one that ``engines`` builds (the embedded engine by default)."""
    try:
        if bundle is None:
            bundle = PolicyStore(settings, audit, clock).load_active()
        if engine is None:
            engine = (engines or _default_engines(settings))(bundle.decision_path())
        engine.load(bundle.policies(), bundle.data)
    except BrokerError as exc:  # no verified policy loaded: fail closed
        return DecisionPoint(
            NoPolicyEngine(exc.message), "none", DEFAULT_DECISION, clock, hasher, audit
        )
    return DecisionPoint(engine, bundle.revision, bundle.decision_path(), clock, hasher, audit)


class LiveDecisionPoint:
    """The active revision's decision point for a long-running process (``broker serve``):
    at most every ``check_s`` seconds it reads which revision the ``active`` link names, and
    when ``broker policy activate`` (another process) has swapped it, loads and verifies the
    new one. Decisions after the swap use the new revision without a restart; a revision that
    does not verify makes every decision a denial, as at start. Records decided on the old
    point and not yet flushed move to the new one."""

    def __init__(
        self,
        settings: Settings,
        audit: AuditSink,
        clock: Clock,
        hasher: SubjectHasher,
        check_s: float = 1.0,
        engines: EngineFactory | None = None,
    ) -> None:
        self._open: Callable[[], DecisionPoint] = lambda: open_decision_point(
            settings, audit, clock, hasher, engines=engines
        )
        self._store = PolicyStore(settings, audit, clock)
        self._revision = self._store.active_revision()
        self._point = self._open()
        self._check_s = check_s
        self._next = time.monotonic() + check_s
        self._lock = threading.Lock()

    @property
    def revision(self) -> str:
        return self.current.revision

    @property
    def current(self) -> DecisionPoint:
        now = time.monotonic()
        if now >= self._next:
            with self._lock:
                if now >= self._next:
                    self._next = now + self._check_s
                    revision = self._store.active_revision()
                    if revision != self._revision:
                        old, self._point = self._point, self._open()
                        self._point.pending.extend(old.pending)
                        self._point.failures.extend(old.failures)
                        old.pending, old.failures = [], []
                        self._revision = revision
        return self._point

    def decide(self, facts: Facts) -> Decision:
        return self.current.decide(facts)

    def flush(self, session: Session) -> int:
        return self._point.flush(session)


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
