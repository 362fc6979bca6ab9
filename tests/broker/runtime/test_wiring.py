"""The runtime picks the policy engine the settings name, and nothing below it falls back from
that choice on its own (X.1332 R3.4: an engine that is not there means deny)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.kit.clock import FixedClock
from broker.policy.bundle import shipped_bundle_dir
from broker.policy.decision import Facts, ReleaseRequest
from broker.policy.service import open_decision_point
from broker.policy.store import PolicyStore
from broker.rego.engine import EmbeddedEngine
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.runtime.wiring import policy_engines
from connectors.opa.client import OpaServerEngine
from tests.broker.fakes import settings_for

AT = datetime(2026, 11, 25, tzinfo=UTC)


def _runtime(tmp_path: Path) -> Runtime:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    rt = Runtime.open(settings, FixedClock(AT))
    with rt.db.transaction() as session:
        PolicyStore(settings, rt.audit, rt.clock).activate(shipped_bundle_dir(), session, "test")
    return rt


def _ems_aggregate() -> Facts:
    request = ReleaseRequest("ems-grid", "ems", "grid_operations", ("consumption",), "15min",
                             AT, AT + timedelta(days=1))  # fmt: skip
    return Facts(request, (), AT)


def test_the_runtime_builds_the_engine_the_settings_name(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, policy_engine="opa", opa_url="https://opa.internal:8181")
    opa = policy_engines(settings)("broker/release/decision")
    assert isinstance(opa, OpaServerEngine) and opa.endpoint.url == "https://opa.internal:8181"
    opa.close()
    embedded = policy_engines(settings_for(tmp_path))("broker/release/decision")
    assert isinstance(embedded, EmbeddedEngine)


def test_R3_4_an_opa_setting_without_the_runtimes_engine_denies_rather_than_embeds(
    tmp_path: Path,
) -> None:
    rt = _runtime(tmp_path)
    embedded = open_decision_point(rt.settings, rt.audit, rt.clock, rt.hasher)
    assert embedded.decide(_ems_aggregate()).allow
    opa = rt.settings.model_copy(update={"policy_engine": "opa"})
    point = open_decision_point(opa, rt.audit, rt.clock, rt.hasher)
    decision = point.decide(_ems_aggregate())
    assert not decision.allow and decision.reasons[0].code == "engine_error"
    assert "handed in by the runtime" in decision.reasons[0].message
    rt.close()
