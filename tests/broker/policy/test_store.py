"""Activation: only a bundle that passes check and tests, signed, swapped atomically, audited;
a revision whose signature or file hashes do not match is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.policy.bundle import shipped_bundle_dir
from broker.policy.decision import Facts, ReleaseRequest
from broker.policy.errors import NoActivePolicy, PolicySignatureError
from broker.policy.service import open_decision_point
from broker.policy.store import PolicyRejected, PolicyStore, verify_key_path
from broker.settings import Mode
from tests.broker.fakes import RecordingAuditSink, settings_for
from tests.broker.policy.conftest import POLICY, TESTS, edit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class _Session:
    """activate() hands the session to the audit sink only; the fake sink ignores it."""


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    settings = settings_for(tmp_path / "var", Mode.development)
    settings.data_dir.mkdir()
    return PolicyStore(settings, RecordingAuditSink(), FixedClock(NOW))


def _activate(store: PolicyStore, source: Path) -> Any:
    return store.activate(source, _Session(), "cli:officer")  # type: ignore[arg-type]


def test_activation_signs_swaps_and_audits(store: PolicyStore) -> None:
    first = _activate(store, shipped_bundle_dir())
    assert (first.revision, first.previous) == ("1", None)
    assert first.tests_passed >= 25
    bundle = store.load_active()
    assert bundle.revision == "1"
    assert (store.active_link.resolve() / ".signatures.json").is_file()
    second = _activate(store, shipped_bundle_dir())
    assert (second.revision, second.previous) == ("2", "1")
    assert store.active_revision() == "2"
    assert Path(store.previous_link.resolve()).name == "1"
    audit = store.audit
    assert isinstance(audit, RecordingAuditSink)
    assert audit.types() == ["policy.activated", "policy.activated"]
    assert audit.events[1].details["previous"] == "1"
    # the revision number is in the signed manifest: the same files make a new digest
    assert audit.events[1].details["digest"] == second.digest != first.digest


def test_a_bundle_failing_its_tests_never_replaces_the_running_one(
    store: PolicyStore, bundle_copy: Path
) -> None:
    _activate(store, shipped_bundle_dir())
    edit(bundle_copy / POLICY, '"retention_days": purpose.retention_days,', '"retention_days": 1,')
    edit(
        bundle_copy / TESTS,
        '\td.consent_ids == ["cn_a"]\n',
        '\td.consent_ids == ["cn_a"]\n\td.retention_days == 365\n',
    )
    with pytest.raises(
        PolicyRejected, match=r"fails its tests: broker\.release_test\.test_consented"
    ):
        _activate(store, bundle_copy)
    assert store.active_revision() == "1"
    assert [r["revision"] for r in store.revisions()] == ["1"]
    assert not list((store.root / "revisions").glob(".staging*"))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("tier_known(r) if not r.tier\n",
         "tier_known(r) if not r.tier\n\nx := http.send({})\n", "http.send"),
        ("allowed := d if {", "allowed := d if {{", "fails policy check"),
    ],
    ids=["forbidden builtin", "invalid rego"],
)  # fmt: skip
def test_a_bundle_failing_check_is_refused(
    store: PolicyStore, bundle_copy: Path, old: str, new: str, message: str
) -> None:
    _activate(store, shipped_bundle_dir())
    edit(bundle_copy / POLICY, old, new)
    with pytest.raises(PolicyRejected, match=message):
        _activate(store, bundle_copy)
    assert store.active_revision() == "1"
    assert store.load_active().revision == "1"


def test_a_changed_file_in_the_active_revision_is_refused(store: PolicyStore) -> None:
    _activate(store, shipped_bundle_dir())
    policy = store.active_link.resolve() / POLICY
    policy.write_text(policy.read_text().replace('"active"', '"suspended"', 1))
    with pytest.raises(PolicySignatureError, match=r"files differ from the signed revision: "
                       r"broker/release/policy\.rego"):  # fmt: skip
        store.load_active()


def test_a_signature_under_another_key_is_refused(store: PolicyStore, tmp_path: Path) -> None:
    _activate(store, shipped_bundle_dir())
    other = PolicyStore(
        settings_for(tmp_path / "other", Mode.development), store.audit, store.clock
    )
    other.settings.data_dir.mkdir()
    _activate(other, shipped_bundle_dir())
    verify_key_path(store.settings).write_bytes(verify_key_path(other.settings).read_bytes())
    with pytest.raises(PolicySignatureError, match="the signature does not verify"):
        store.load_active()


def test_a_revision_number_edited_in_the_manifest_is_refused(store: PolicyStore) -> None:
    _activate(store, shipped_bundle_dir())
    manifest = store.active_link.resolve() / ".manifest"
    doc = json.loads(manifest.read_text())
    doc["revision"] = "99"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(PolicySignatureError, match="files differ"):
        store.load_active()


def test_no_active_policy_means_every_release_is_denied(store: PolicyStore) -> None:
    with pytest.raises(NoActivePolicy, match="broker policy activate"):
        store.load_active()
    point = open_decision_point(
        store.settings, RecordingAuditSink(), store.clock, SubjectHasher(b"s" * 32)
    )
    request = ReleaseRequest(
        "tp", "third_party", "grid_operations", ("consumption",), "hourly", NOW, NOW, None
    )
    decision = point.decide(Facts(request, [], NOW))
    assert not decision.allow
    assert decision.reasons[0].code == "engine_error"
    assert "no policy is active" in decision.reasons[0].message


def test_a_tampered_active_revision_fails_closed(store: PolicyStore) -> None:
    _activate(store, shipped_bundle_dir())
    data = store.active_link.resolve() / "broker/catalogue/data.json"
    data.write_text(data.read_text().replace('"retention_days": 90', '"retention_days": 9000'))
    point = open_decision_point(
        store.settings, RecordingAuditSink(), store.clock, SubjectHasher(b"s" * 32)
    )
    assert point.engine.name == "none"
    assert point.revision == "none"
