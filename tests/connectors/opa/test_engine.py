"""The OPA engine against the stand-in over HTTPS with the private CA: it decides as the embedded
engine does on the same policy, data and inputs; undefined stays undefined; a module OPA refuses
leaves the previous policy answering; a reload removes what the new load no longer has."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from broker.rego.engine import UNDEFINED, EmbeddedEngine, EngineFailure, PolicyLoadError
from connectors.opa.client import POLICY_PREFIX
from tests.connectors.opa.cases import ALLOWED, DATA, EXTRA, INPUTS, RELEASE
from tests.connectors.opa.conftest import MakeEngine
from tests.connectors.opa.standin import OpaStandIn


@pytest.mark.parametrize("path", ["broker/release/decision", "broker.release.allow"])
def test_server_decisions_equal_the_embedded_engine(
    opa_url: str, make_engine: MakeEngine, path: str
) -> None:
    server, embedded = make_engine(opa_url), EmbeddedEngine()
    server.load({"release.rego": RELEASE}, DATA)
    embedded.load({"release.rego": RELEASE}, DATA)
    answers = [server.evaluate(path, doc) for doc in INPUTS]
    assert answers == [embedded.evaluate(path, doc) for doc in INPUTS]
    assert len({repr(answer) for answer in answers}) > 1  # the inputs do tell decisions apart


def test_decisions_from_many_threads_share_one_engine(
    opa_url: str, make_engine: MakeEngine
) -> None:
    """The decision point evaluates from several worker threads at once."""
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE}, DATA)

    def decide_all(_: int) -> list[object]:
        return [engine.evaluate("broker/release/decision", doc) for doc in INPUTS]

    expected = decide_all(0)
    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(decide_all, range(24))) == [expected] * 24


def test_undefined_document_is_undefined_not_false(opa_url: str, make_engine: MakeEngine) -> None:
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE}, DATA)
    assert engine.evaluate("broker/release/retention_days", INPUTS[0]) == 90
    assert engine.evaluate("broker/release/retention_days", INPUTS[1]) is UNDEFINED
    assert engine.evaluate("broker/release/no_such_rule", INPUTS[0]) is UNDEFINED
    assert engine.evaluate("broker/release/allow", INPUTS[1]) is False


def test_invalid_rego_is_refused_and_the_previous_policy_still_answers(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE}, DATA)
    stricter = RELEASE.replace("allow if {\n", 'allow if {\n\tinput.recipient.kind == "none"\n')
    assert stricter != RELEASE
    with pytest.raises(
        PolicyLoadError, match=r"(?s)refused \S*zz-broken\.rego: .*expecting expression"
    ) as refused:
        engine.load({"release.rego": stricter, "zz-broken.rego": "package x\nallow if {"}, DATA)
    assert not isinstance(refused.value, EngineFailure)
    assert opa.policies == {POLICY_PREFIX + "release.rego": RELEASE}  # the first module put back
    assert engine.evaluate("broker/release/decision", INPUTS[0]) == ALLOWED


def test_refused_data_puts_back_the_previous_modules_and_data(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE}, DATA)
    no_purposes = {"broker": {"catalogue": {"purposes": {}}}, "z/bad": 1}
    with pytest.raises(PolicyLoadError, match="cannot be written"):
        engine.load({"release.rego": RELEASE + "\nextra := 1\n"}, no_purposes)
    assert opa.data == DATA
    assert opa.policies == {POLICY_PREFIX + "release.rego": RELEASE}
    assert engine.evaluate("broker/release/decision", INPUTS[0]) == ALLOWED


def test_rego_v0_is_refused_without_an_upgrade_attempt(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url)
    with pytest.raises(PolicyLoadError, match="`if` keyword is required"):
        engine.load({"v0.rego": "package broker.release\n\nallow { true }\n"}, {})
    puts = [line for line in opa.seen if line.startswith("PUT /v1/policies/")]
    assert puts == [f"PUT /v1/policies/{POLICY_PREFIX}v0.rego?"]  # once, as written
    assert opa.policies == {}


def test_builtin_error_is_an_engine_failure_not_undefined(
    opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url)
    engine.load({"ratio.rego": "package broker.ratio\n\nratio := input.a / input.b\n"}, {})
    assert engine.evaluate("broker/ratio/ratio", {"a": 6, "b": 3}) == 2
    with pytest.raises(EngineFailure, match="divide by zero"):
        engine.evaluate("broker/ratio/ratio", {"a": 6, "b": 0})


def test_reload_removes_modules_and_data_keys_no_longer_loaded(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE, "extra.rego": EXTRA}, {**DATA, "old": {"n": 1}})
    assert engine.evaluate("broker/extra/answer", {}) == 42
    engine.load({"release.rego": RELEASE}, DATA)
    assert engine.evaluate("broker/extra/answer", {}) is UNDEFINED
    assert set(opa.policies) == {POLICY_PREFIX + "release.rego"}
    assert opa.data == DATA


def test_reload_by_another_process_removes_modules_the_first_one_loaded(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    make_engine(opa_url).load({"release.rego": RELEASE, "extra.rego": EXTRA}, DATA)
    restarted = make_engine(opa_url)
    restarted.load({"release.rego": RELEASE}, DATA)
    assert set(opa.policies) == {POLICY_PREFIX + "release.rego"}
    assert restarted.evaluate("broker/release/decision", INPUTS[0]) == ALLOWED


def test_modules_outside_the_prefix_are_left_alone(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    opa.put_policy("ops/system.rego", "package system\n\nmain := true\n")
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE, "extra.rego": EXTRA}, DATA)
    engine.load({}, {})
    assert set(opa.policies) == {"ops/system.rego"}
    assert engine.evaluate("broker/release/decision", INPUTS[0]) is UNDEFINED


def test_unchanged_modules_are_not_sent_again(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE, "extra.rego": EXTRA}, DATA)
    opa.seen.clear()
    engine.load({"release.rego": RELEASE, "extra.rego": EXTRA.replace("42", "43")}, DATA)
    assert [line for line in opa.seen if "/v1/policies/" in line] == [
        f"PUT /v1/policies/{POLICY_PREFIX}extra.rego?"
    ]
    assert engine.evaluate("broker/extra/answer", {}) == 43


def test_health_is_reported(opa_url: str, make_engine: MakeEngine) -> None:
    assert make_engine(opa_url).healthy()
