"""The decision point: deny by default, fail closed, and a log without personal data.

X.1332 R3.4 (personal data only with consent), R3.5 (only for services that need it), R4.4 (none
to the operator): every missing piece of scope is a denial; an engine that is undefined, fails
or answers nonsense is a denial with an audit entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.policy.bundle import Bundle
from broker.policy.decision import DecisionPoint, Facts, ReleaseRequest, consent_fact
from broker.rego.engine import UNDEFINED, EmbeddedEngine, EngineFailure
from tests.broker.fakes import RecordingAuditSink

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HASHER = SubjectHasher(b"k" * 32)


def request(**changes: Any) -> ReleaseRequest:
    fields: dict[str, Any] = {
        "recipient_id": "tp_app",
        "recipient_kind": "third_party",
        "purpose": "personalised_service",
        "categories": ("consumption",),
        "granularity": "hourly",
        "period_from": NOW - timedelta(days=7),
        "period_to": NOW,
        "subject": "cust-0001",
    }
    fields.update(changes)
    return ReleaseRequest(**fields)


def consent(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "consent_id": "cn_1",
        "recipient": "tp_app",
        "purposes": ["personalised_service"],
        "categories": ["consumption"],
        "granularity": "15min",
        "history_days": 30,
        "identified": True,
        "explicit": True,
        "given_at": NOW - timedelta(days=1),
        "expires_at": NOW + timedelta(days=200),
    }
    fields.update(changes)
    return consent_fact(**fields)


@pytest.fixture
def point(shipped: Bundle) -> DecisionPoint:
    engine = EmbeddedEngine()
    engine.load(shipped.policies(), shipped.data)
    return DecisionPoint(
        engine, "7", shipped.decision_path(), FixedClock(NOW), HASHER, RecordingAuditSink()
    )


def test_consented_request_is_allowed(point: DecisionPoint) -> None:
    decision = point.decide(Facts(request(), [consent()], NOW))
    assert decision.allow
    assert decision.tier == "raw"
    assert decision.consent_ids == ("cn_1",)
    assert decision.revision == "7"


@pytest.mark.parametrize(
    ("req", "consents", "code"),
    [
        (request(), [], "no_covering_consent"),
        (request(purpose="horoscopes"), [consent()], "unknown_purpose"),
        (request(categories=("consumption", "gas")), [consent()], "unknown_category"),
        (request(categories=("generation",)), [consent()], "no_covering_consent"),
        (request(categories=()), [consent()], "missing_scope"),
        (request(granularity="15min"), [consent(granularity="hourly")], "no_covering_consent"),
        (request(granularity="weekly"), [consent()], "unknown_granularity"),
        (request(recipient_id="tp_other"), [consent()], "no_covering_consent"),
        (request(period_from=NOW - timedelta(days=32)), [consent()], "no_covering_consent"),
        (request(period_to=NOW + timedelta(days=201)), [consent()], "no_covering_consent"),
        (request(period_from=NOW, period_to=NOW), [consent()], "missing_scope"),
        (request(recipient_status="revoked"), [consent()], "recipient_not_active"),
        (request(recipient_kind="ems"), [consent()], "personal_data_to_operator"),
        (request(), [consent(explicit=False)], "explicit_consent_required"),
        (request(tier="secret"), [consent()], "unknown_tier"),
        (request(), [consent(identified=False)], "pseudonymous_consent_only"),
        (request(subject=None), [], "no_aggregate_basis"),
        (
            request(subject=None, recipient_kind="supplier", purpose="billing"),
            [],
            "no_aggregate_basis",
        ),
    ],
    ids=[
        "no consent",
        "unknown purpose",
        "unknown category",
        "category not consented",
        "no category",
        "finer than consented",
        "unknown granularity",
        "other recipient",
        "before the history window",
        "after expiry",
        "empty period",
        "revoked recipient",
        "operator asks for a household (R4.4)",
        "sub-daily without explicit opt-in",
        "unknown tier",
        "pseudonymous consent, customer named (C3.3)",
        "aggregate of a consent-based service without consent",
        "aggregate of a contract-based service",
    ],
)
def test_every_missing_piece_of_scope_denies(
    point: DecisionPoint, req: ReleaseRequest, consents: list[dict[str, Any]], code: str
) -> None:
    """R3.4 / R3.5: what is not named is not granted."""
    decision = point.decide(Facts(req, consents, NOW))
    assert not decision.allow
    assert code in {r.code for r in decision.reasons}
    assert decision.tier is None


def test_expiry_is_evaluated_at_decision_time_to_the_second(point: DecisionPoint) -> None:
    expires = NOW + timedelta(days=1)
    facts = Facts(request(period_to=NOW), [consent(expires_at=expires)], NOW)
    before = Facts(facts.request, facts.consents, expires - timedelta(seconds=1))
    at = Facts(facts.request, facts.consents, expires)
    assert point.decide(before).allow
    decision = point.decide(at)
    assert not decision.allow
    assert [r.code for r in decision.reasons] == ["no_covering_consent"]


def test_the_log_names_the_customer_only_by_keyed_hash(point: DecisionPoint) -> None:
    point.decide(Facts(request(), [consent()], NOW))
    record = point.pending[0]
    assert "cust-0001" not in record.input_json
    assert json.loads(record.input_json)["request"]["subject"] == HASHER("cust-0001")
    assert record.row()["allow"] is True


class _Failing:
    name = "broken"

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def load(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        return None

    def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Any:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (UNDEFINED, "engine_undefined"),
        (EngineFailure("builtin error"), "engine_error"),
        ({"allow": "yes"}, "engine_malformed"),
        ({"allow": 1, "tier": "raw", "granularity": "hourly", "fields_drop": [],
          "retention_days": 1, "reasons": [], "obligations": []}, "engine_malformed"),
        ({"allow": True, "tier": None, "granularity": "hourly", "fields_drop": [],
          "retention_days": 1, "reasons": [], "obligations": []}, "engine_malformed"),
        ([True], "engine_malformed"),
    ],
)  # fmt: skip
def test_engine_undefined_error_or_nonsense_denies_with_an_audit_entry(
    outcome: Any, code: str
) -> None:
    audit = RecordingAuditSink()
    point = DecisionPoint(
        _Failing(outcome), "3", "broker/release/decision", FixedClock(NOW), HASHER, audit
    )
    decision = point.decide(Facts(request(), [consent()], NOW))
    assert not decision.allow
    assert decision.reasons[0].code == code
    assert len(point.failures) == 1
    point.flush(_NoSession())  # type: ignore[arg-type]
    assert audit.types() == ["policy.engine_failure"]
    assert audit.events[0].subject == HASHER("cust-0001")


class _NoSession:
    def execute(self, *args: Any, **kwargs: Any) -> None:
        self.called = True


# --- the allow path and the deny reasons agree ------------------------------------------------

_granularities = st.sampled_from(
    ["15min", "30min", "hourly", "daily", "daily", "monthly", "monthly", "weekly"]
)
_purposes = st.sampled_from(
    ["personalised_service", "energy_efficiency_research", "demand_response",
     "grid_operations", "billing", "marketing", "unknown"]
)  # fmt: skip
_categories = st.lists(
    st.sampled_from(["consumption", "generation", "register_reads", "customer_details", "dna"]),
    max_size=3,
    unique=True,
)
_recipients = st.sampled_from(["tp_app", "tp_other"])
_kinds = st.sampled_from(["third_party", "researcher", "supplier", "ems"])
_FITS = {  # a recipient kind and a category each purpose accepts
    "personalised_service": ("third_party", "consumption"),
    "energy_efficiency_research": ("researcher", "consumption"),
    "demand_response": ("third_party", "generation"),
    "grid_operations": ("ems", "consumption"),
    "billing": ("supplier", "register_reads"),
    "marketing": ("third_party", "consumption"),
}


@st.composite
def _facts(draw: st.DrawFn) -> Facts:
    days = draw(st.integers(-40, 0))
    length = draw(st.sampled_from([-1, 1, 3, 7, 10, 40]))
    purpose = draw(_purposes)
    fitting = _FITS.get(purpose, ("third_party", "consumption"))
    req = ReleaseRequest(
        recipient_id=draw(_recipients),
        recipient_kind=draw(st.sampled_from([fitting[0]] * 4) | _kinds),
        purpose=purpose,
        categories=tuple(draw(st.sampled_from([[fitting[1]]] * 3) | _categories)),
        granularity=draw(_granularities),
        period_from=NOW + timedelta(days=days),
        period_to=NOW + timedelta(days=days + length),
        subject=draw(st.sampled_from(["cust-1", None])),
        recipient_status=draw(st.sampled_from(["active"] * 5 + ["suspended"])),
        tier=draw(st.sampled_from([None] * 6 + ["generalised", "dp", "bogus"])),
    )
    consents = [
        consent(
            consent_id=f"cn_{i}",
            recipient=draw(_recipients),
            purposes=draw(st.lists(_purposes, min_size=1, max_size=2, unique=True)),
            categories=draw(_categories) or ["consumption"],
            granularity=draw(_granularities.filter(lambda g: g != "weekly")),
            history_days=draw(st.integers(0, 40)),
            identified=draw(st.booleans()),
            explicit=draw(st.booleans()),
            expires_at=NOW + timedelta(days=draw(st.integers(-2, 300))),
        )
        for i in range(draw(st.integers(0, 2)))
    ]
    if draw(st.booleans()):
        # a consent made to cover this request, then perhaps one field changed: most
        # of these allow, so both paths of the policy are exercised
        fitted: dict[str, Any] = {
            "consent_id": "cn_fit",
            "recipient": req.recipient_id,
            "purposes": [req.purpose],
            "categories": list(req.categories) or ["consumption"],
            "granularity": "15min",
            "history_days": 60,
            "identified": draw(st.booleans()),
            "explicit": draw(st.sampled_from([True, True, False])),
            "expires_at": NOW + timedelta(days=draw(st.sampled_from([0, 30, 300]))),
        }
        consents.append(consent(**fitted))
    contract = draw(
        st.sampled_from(
            [
                None,
                {"recipient": req.recipient_id, "active": True},
                {"recipient": "x", "active": True},
            ]
        )
    )
    return Facts(req, consents, NOW, contract)


@pytest.fixture(scope="module")
def engines(shipped: Bundle) -> tuple[EmbeddedEngine, EmbeddedEngine]:
    """The release decision compiled for the VM (as the broker runs it) and interpreted."""
    compiled = EmbeddedEngine(compiled=(shipped.decision_path(),))
    compiled.load(shipped.policies(), shipped.data)
    assert compiled.compiled, compiled.compile_error
    interpreted = EmbeddedEngine()
    interpreted.load(shipped.policies(), shipped.data)
    return compiled, interpreted


_BILLING = Facts(
    request(recipient_kind="supplier", purpose="billing", granularity="30min"),
    [],
    NOW,
    {"recipient": "tp_app", "active": True},
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=_facts())
@example(facts=_BILLING)
@example(facts=Facts(_BILLING.request, [], NOW, None))
def test_allow_exactly_when_no_deny_reason_holds(
    shipped: Bundle, engines: tuple[EmbeddedEngine, EmbeddedEngine], facts: Facts
) -> None:
    """The fast allow path and the deny rules are two encodings of one policy: they agree.
    And the compiled decision (regorus's VM) equals the interpreted one."""
    compiled, interpreted = engines
    point = DecisionPoint(
        compiled, "1", shipped.decision_path(), FixedClock(NOW), HASHER, RecordingAuditSink()
    )
    decision = point.decide(facts)
    input_json = point.pending[-1].input_json
    assert interpreted.evaluate_json(shipped.decision_path(), input_json) == compiled.evaluate_json(
        shipped.decision_path(), input_json
    )
    deny = interpreted.evaluate_json("broker/release/deny", input_json)
    deny_codes = set(deny) if deny is not UNDEFINED else set()
    assert decision.allow == (not deny_codes), (decision, deny_codes)
    if decision.allow:
        assert decision.tier in {"raw", "pseudonymised", "generalised", "aggregated", "dp"}
        if facts.request.recipient_kind == "ems" or facts.request.subject is None:
            assert decision.tier in {"aggregated", "dp"}  # R4.4 and aggregate scope
    else:
        assert {r.code for r in decision.reasons} == deny_codes


def test_generated_inputs_reach_both_outcomes(shipped: Bundle) -> None:
    """The generator above is not degenerate: it yields allows and denials of each basis."""
    engine = EmbeddedEngine()
    engine.load(shipped.policies(), shipped.data)
    point = DecisionPoint(
        engine, "1", shipped.decision_path(), FixedClock(NOW), HASHER, RecordingAuditSink()
    )
    codes: set[str] = set()

    @settings(max_examples=600, deadline=None, database=None, derandomize=True)
    @given(facts=_facts())
    def collect(facts: Facts) -> None:
        codes.update(r.code for r in point.decide(facts).reasons)

    collect()
    assert {"consent", "aggregate_only", "legal_obligation"} <= codes  # contract: @example
    assert {
        "no_covering_consent",
        "explicit_consent_required",
        "personal_data_to_operator",
        "pseudonymous_consent_only",
        "no_aggregate_basis",
    } <= codes


def test_an_engine_loaded_in_one_thread_decides_in_others(shipped: Bundle) -> None:
    """regorus objects are unsendable (pyo3): every server thread must build its own."""
    import threading

    engine = EmbeddedEngine(compiled=(shipped.decision_path(),))
    engine.load(shipped.policies(), shipped.data)
    point = DecisionPoint(
        engine, "1", shipped.decision_path(), FixedClock(NOW), HASHER, RecordingAuditSink()
    )
    answers: list[bool] = []

    def decide() -> None:
        answers.append(point.decide(Facts(request(), [consent()], NOW)).allow)

    workers = [threading.Thread(target=decide) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert answers == [True, True, True]
    assert not point.failures
