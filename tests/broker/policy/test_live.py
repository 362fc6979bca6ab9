"""A running broker follows ``broker policy activate`` without a restart: the
pipeline's decision point notices the swapped ``active`` link and loads the new revision; a
revision that stops verifying makes every later decision a denial."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.kit.clock import FixedClock
from broker.policy.bundle import shipped_bundle_dir
from broker.policy.decision import Facts, ReleaseRequest
from broker.policy.service import LiveDecisionPoint
from broker.policy.store import PolicyStore
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from tests.broker.fakes import settings_for

AT = datetime(2026, 11, 25, tzinfo=UTC)


def _ems_aggregate() -> Facts:
    request = ReleaseRequest("ems-grid", "ems", "grid_operations", ("consumption",), "15min",
                             AT, AT + timedelta(days=1))  # fmt: skip
    return Facts(request, (), AT)


def test_an_activation_reaches_a_running_decision_point(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    upgrade_schema(settings).dispose()
    clock = FixedClock(AT)
    rt = Runtime.open(settings, clock)
    store = PolicyStore(settings, rt.audit, clock)
    with rt.db.transaction() as session:
        store.activate(shipped_bundle_dir(), session, "test")
    live = LiveDecisionPoint(settings, rt.audit, clock, rt.hasher, check_s=0)
    first = live.decide(_ems_aggregate())
    assert first.allow and first.revision == live.revision
    with rt.db.transaction() as session:
        store.activate(shipped_bundle_dir(), session, "test")
    second = live.decide(_ems_aggregate())
    assert second.allow and second.revision != first.revision
    with rt.db.transaction() as session:
        assert live.flush(session) == 2  # nothing decided on the old point is lost
    with rt.db.transaction() as session:  # a third revision, changed before it is noticed
        store.activate(shipped_bundle_dir(), session, "test")
    active = (settings.data_dir / "policy" / "active").resolve()
    policy = next(active.rglob("policy.rego"))
    policy.write_text(policy.read_text() + "\n# edited behind the store's back\n")
    denied = live.decide(_ems_aggregate())
    assert not denied.allow and denied.reasons[0].code.startswith("engine_")
    rt.close()
