"""The release pipeline on real MDMS readings, SQLite and PostgreSQL (X.1332 R3.4, R3.5, R4.4,
C3.3): nothing is read before an allowing decision; a release is exactly what was decided and
leaves one audit entry linking decision, revision, consents and manifest."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import select, text

from broker.audit.models import AuditEntry
from broker.policy.decision import TABLE as DECISIONS
from broker.policy.decision import Facts
from broker.release.errors import NotAllowed, ReleaseDenied, ReleaseRefused
from broker.release.service import RELEASES, ReleaseOptions, ReleasePipeline
from broker.release.store import ReadingsRepository
from deidentify.dp import BudgetRules
from tests.broker.release.conftest import CUSTOMER, DAY0, OTHER_CUSTOMER, Broker

ENTRIES = AuditEntry.metadata.tables["audit_entry"]
END = DAY0 + dt.timedelta(days=2)


def _household(b: Broker, p: ReleasePipeline, recipient: str = "acme", purpose: str =
               "personalised_service", granularity: str = "hourly") -> Any:  # fmt: skip
    with b.rt.db.transaction() as session:
        request = p.request_for(session, recipient, purpose, ("consumption",), granularity,
                                DAY0, END, CUSTOMER)  # fmt: skip
    return p.run(b.rt.db, request, ReleaseOptions())


def _aggregate(b: Broker, p: ReleasePipeline, tier: str | None = None, epsilon: float = 1.0,
               day: int = 0, groups: tuple[str, ...] = ("F-001", "F-002"),
               granularity: str = "hourly") -> Any:  # fmt: skip
    start = DAY0 + dt.timedelta(days=day)
    with b.rt.db.transaction() as session:
        end = start + dt.timedelta(days=1)
        request = p.request_for(session, "ems-grid", "grid_operations", ("consumption",),
                                granularity, start, end, tier=tier)  # fmt: skip
    return p.run(b.rt.db, request, ReleaseOptions(groups=groups, epsilon=epsilon))


def _entries(b: Broker, kind: str) -> list[dict[str, Any]]:
    with b.rt.db.transaction() as session:
        rows = session.execute(select(ENTRIES).where(ENTRIES.c.event_type == kind))
        return [dict(r._mapping) for r in rows]


def _details(entry: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(entry["body"]) if "body" in entry else entry
    return dict(body.get("details", body))


class SpyRepository(ReadingsRepository):
    def __init__(self, inner: ReadingsRepository) -> None:
        self.__dict__.update(inner.__dict__)
        self.reads = 0

    def household(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return super().household(*args, **kwargs)

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return super().aggregate(*args, **kwargs)


def test_R3_4_a_denied_decision_reads_no_readings(broker: Broker) -> None:
    pipeline = broker.pipeline()
    spy = SpyRepository(pipeline.repository)
    pipeline.repository = spy
    with pytest.raises(ReleaseDenied) as denied:
        _household(broker, pipeline)  # no consent
    assert spy.reads == 0
    assert denied.value.status_code == 403
    assert {r.code for r in denied.value.reasons}
    with broker.rt.db.transaction() as session:
        logged = session.execute(select(DECISIONS.c.decision_id, DECISIONS.c.allow)).all()
        released = session.execute(select(RELEASES)).all()
    assert [(r.decision_id, r.allow) for r in logged] == [(denied.value.decision_id, False)]
    assert released == []
    assert len(_entries(broker, "release.refused")) == 1
    assert _entries(broker, "release.made") == []


def test_R3_4_the_repository_refuses_a_denied_decision(broker: Broker) -> None:
    pipeline = broker.pipeline()
    with broker.rt.db.transaction() as session:
        request = pipeline.request_for(session, "acme", "personalised_service",
                                       ("consumption",), "hourly", DAY0, END, CUSTOMER)  # fmt: skip
    decision = pipeline.decisions.decide(Facts(request, [], DAY0))
    assert not decision.allow
    with broker.rt.db.transaction() as session, pytest.raises(NotAllowed):
        pipeline.repository.household(session, decision, CUSTOMER, DAY0, END)


def test_R3_4_consented_household_release_is_raw_with_one_audit_entry(broker: Broker) -> None:
    consent_id = broker.consent()
    pipeline = broker.pipeline()
    result = _household(broker, pipeline)
    assert result.tier == "raw" and result.granularity == "hourly"
    meter = broker.fleet.meters[0].system_title.hex().upper()
    assert set(result.frame["meter_id"]) == {meter}
    assert OTHER_CUSTOMER not in result.frame.to_csv()
    assert len(result.frame) == 48 and (result.frame["interval_s"] == 3600).all()
    made = _entries(broker, "release.made")
    assert len(made) == 1
    details = _details(made[0])
    assert details["decision_id"] == result.decision.decision_id
    assert details["revision"] == result.decision.revision
    assert details["consent_ids"] == [consent_id]
    assert details["release_id"] == result.release_id
    with broker.rt.db.transaction() as session:
        row = session.execute(select(RELEASES)).one()
    assert row.manifest_digest == details["manifest_sha256"]
    assert hashlib.sha256(row.manifest_json.encode()).hexdigest() == row.manifest_digest
    assert json.loads(row.consent_ids) == [consent_id]
    assert row.decision_id == result.decision.decision_id and row.rows == 48


def test_C3_3_a_pseudonymous_consent_is_never_released_under_the_customer_id(
    broker: Broker,
) -> None:
    """A subject release names the customer: resting on a consent to pseudonymous data only,
    it would tell the recipient which pseudonym is theirs."""
    broker.consent(purpose="demand_response", identified=False)
    with pytest.raises(ReleaseDenied) as denied:
        _household(broker, broker.pipeline(), purpose="demand_response")
    assert [r.code for r in denied.value.reasons] == ["pseudonymous_consent_only"]


def test_R3_5_a_pseudonymised_purpose_releases_pseudonyms_only(broker: Broker) -> None:
    broker.consent(purpose="demand_response")
    result = _household(broker, broker.pipeline(), purpose="demand_response")
    assert result.tier == "pseudonymised"
    meter = broker.fleet.meters[0].system_title.hex().upper()
    values = set(result.frame["meter_id"])
    assert len(values) == 1 and next(iter(values)).startswith("ps1:")
    assert meter not in result.frame.to_csv() and CUSTOMER not in result.frame.to_csv()


def test_R4_4_ems_aggregate_has_no_meter_id_pseudonym_or_small_group(broker: Broker) -> None:
    result = _aggregate(broker, broker.pipeline())
    assert result.tier == "aggregated"
    body = result.frame.to_csv()
    for meter in broker.fleet.meters:
        assert meter.system_title.hex().upper() not in body
        assert meter.customer_ref not in body
    assert "ps1:" not in body and "hs1:" not in body
    released = result.frame[result.frame["energy_wh"].notna()]
    assert len(released) > 0
    assert (released["members"] >= 100).all()
    assert "F-002" not in set(released["group"].astype(str))
    with broker.rt.db.transaction() as session:
        members = session.execute(text("SELECT members_json FROM release_group")).scalars().all()
    assert members and all(m.startswith("hs1:") for m in json.loads(members[0]))
    ids = {m.system_title.hex().upper() for m in broker.fleet.meters}
    assert not any(i in s for s in members for i in ids)


def test_R4_4_the_same_cells_are_served_again(broker: Broker) -> None:
    pipeline = broker.pipeline()
    _aggregate(broker, pipeline, groups=("F-001",))
    again = _aggregate(
        broker, pipeline, groups=("F-001",)
    )  # the same members: a zero difference is allowed
    assert again.rows > 0
    with broker.rt.db.transaction() as session:
        groups = session.execute(text("SELECT count(*) FROM release_group")).scalar_one()
    assert groups >= 2


def test_R4_4_the_same_aggregate_release_can_be_asked_for_again(broker: Broker) -> None:
    """F-001 and F-002 with F-002 merged into its substation in some intervals: the feeder's
    and the substation's member sets are a few apart, yet repeating the release reveals
    nothing new and is allowed (it was refused as differencing before)."""
    pipeline = broker.pipeline()
    first = _aggregate(broker, pipeline)
    again = _aggregate(broker, pipeline)
    assert first.rows == again.rows > 0


def test_C3_3_dp_budget_is_charged_to_the_household_days_once_whoever_asks(
    broker: Broker,
) -> None:
    """ε is charged to the cell (a substation-day's household-days) in one ledger: the recorded
    noisy values are served again at no cost, to anyone; a new draw of the same day is charged
    to the same cell and refused beyond the cap, before any noise, while another day's cell is
    untouched. The cap survives a restart (a new pipeline on the same database)."""
    pipeline = broker.pipeline(BudgetRules(epsilon_cap=2.0))
    first = _aggregate(broker, pipeline, tier="dp", epsilon=1.0)
    assert first.tier == "dp" and first.spend is not None and first.spend.epsilon == 1.0
    assert first.manifest.epsilon == 1.0 and first.manifest.budget_left == 1.0
    again = _aggregate(broker, broker.pipeline(BudgetRules(epsilon_cap=2.0)), tier="dp")
    assert again.spend is None and again.frame["energy_wh"].equals(first.frame["energy_wh"])
    _aggregate(broker, pipeline, tier="dp", epsilon=0.5)  # another draw of day 0: 1.5 spent
    with pytest.raises(ReleaseRefused, match=r"ε = 0\.5 of 2 left"):
        _aggregate(broker, pipeline, tier="dp", epsilon=1.0, granularity="daily")
    _aggregate(broker, pipeline, tier="dp", epsilon=1.0, day=1)
    with broker.rt.db.transaction() as session:
        spent = session.execute(text("SELECT cell, epsilon FROM privacy_spend")).all()
        made = session.execute(select(RELEASES.c.tier)).scalars().all()
    day0 = int(DAY0.timestamp()) // 86_400
    assert sorted((c.split("|")[1], e) for c, e in spent) == [
        (str(day0), 0.5), (str(day0), 1.0), (str(day0 + 1), 1.0)
    ]  # fmt: skip
    assert made == ["dp"] * 4
    made_entries = [_details(e) for e in _entries(broker, "release.made")]
    assert [(d["budget_spent"] or {}).get("epsilon") for d in made_entries] == [
        "1.0", None, "0.5", "1.0"
    ]  # fmt: skip


def test_a_failure_releases_nothing(broker: Broker) -> None:
    broker.consent()
    pipeline = broker.pipeline()

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("audit log down")

    pipeline.audit = type("Broken", (), {"record": staticmethod(boom)})()
    with pytest.raises(RuntimeError):
        _household(broker, pipeline)
    with broker.rt.db.transaction() as session:
        assert session.execute(select(RELEASES)).all() == []
        assert session.execute(select(DECISIONS)).all() == []
