"""A sick or untrusted OPA server is an ``EngineFailure`` (a deny upstream), never a decision, and
it costs a bounded time: a server that is down, answers 500, answers something that is not JSON,
answers too late or never finishes the handshake, presents a certificate of another CA, wants a
client certificate or a token the broker does not show. The bound is asserted loosely (< 5 s
with a 0.5 s timeout); it is a guard against hanging, not a performance test."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from broker.rego.engine import EngineFailure, PolicyLoadError
from tests.connectors.opa.cases import DATA, INPUTS, RELEASE
from tests.connectors.opa.conftest import MakeEngine, Pki, Serve, server_context
from tests.connectors.opa.standin import OpaStandIn

DECISION = "broker/release/decision"
BOUND_S = 5.0


def _fails_within_bound(engine_call: Callable[[], object], match: str) -> EngineFailure:
    started = time.monotonic()
    with pytest.raises(EngineFailure, match=match) as failure:
        engine_call()
    assert time.monotonic() - started < BOUND_S
    assert not isinstance(failure.value, PolicyLoadError)
    return failure.value


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections are accepted by the kernel and then never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_server_down_is_a_failure_naming_the_server(
    make_engine: MakeEngine, closed_port: int
) -> None:
    engine = make_engine(f"https://127.0.0.1:{closed_port}")
    failure = _fails_within_bound(lambda: engine.evaluate(DECISION, INPUTS[0]), "cannot connect")
    assert f"https://127.0.0.1:{closed_port}" in failure.message
    assert "refused" in failure.message.lower()
    assert not engine.healthy()


def test_server_that_never_answers_costs_a_bounded_time(
    make_engine: MakeEngine, silent_port: int
) -> None:
    engine = make_engine(f"https://127.0.0.1:{silent_port}", timeout_s=0.3)
    _fails_within_bound(lambda: engine.evaluate(DECISION, INPUTS[0]), "no answer within 0.3 s")
    _fails_within_bound(lambda: engine.load({"release.rego": RELEASE}, DATA), "no answer within")


def test_answer_later_than_the_timeout_is_a_failure(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url, timeout_s=0.3)
    engine.load({"release.rego": RELEASE}, DATA)
    opa.faults.delay_s = 1.5
    _fails_within_bound(lambda: engine.evaluate(DECISION, INPUTS[0]), "no answer within 0.3 s")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_is_a_failure_with_the_status(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine, status: int
) -> None:
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE}, DATA)
    opa.faults.status = status
    _fails_within_bound(lambda: engine.evaluate(DECISION, INPUTS[0]), f"answered {status}.*told")
    _fails_within_bound(lambda: engine.load({"release.rego": RELEASE}, DATA), f"{status}")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ("[1, 2]", "as OPA never does.*not a JSON object"),
        ('"allow"', "as OPA never does.*not a JSON object"),
    ],
)
def test_answer_that_is_not_an_opa_answer_is_a_failure(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine, body: str, why: str
) -> None:
    engine = make_engine(opa_url)
    engine.load({"release.rego": RELEASE}, DATA)
    opa.faults.body = body
    _fails_within_bound(lambda: engine.evaluate(DECISION, INPUTS[0]), why)
    _fails_within_bound(lambda: engine.load({"release.rego": RELEASE}, DATA), "JSON|policy list")


def test_certificate_of_another_ca_is_refused(
    serve: Serve, stranger: Pki, make_engine: MakeEngine
) -> None:
    with serve(server_context(stranger.issue())) as url:
        engine = make_engine(url)
        _fails_within_bound(
            lambda: engine.evaluate(DECISION, INPUTS[0]), "TLS failed.*certificate verify failed"
        )


def test_without_the_ca_bundle_the_private_ca_is_not_trusted(
    opa_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(opa_url, ca_bundle=None)  # the system's public CAs
    _fails_within_bound(lambda: engine.load({"release.rego": RELEASE}, DATA), "TLS failed")


def test_mutual_tls_with_the_client_certificate(
    serve: Serve, pki: Pki, make_engine: MakeEngine
) -> None:
    cert, key = pki.issue()
    with serve(server_context(pki.issue(), client_ca=pki.ca.cert_path)) as url:
        engine = make_engine(url, client_cert=cert, client_key=key)
        engine.load({"release.rego": RELEASE}, DATA)
        assert engine.evaluate(DECISION, INPUTS[0])["allow"] is True
        anonymous = make_engine(url)
        _fails_within_bound(
            lambda: anonymous.evaluate(DECISION, INPUTS[0]), "TLS failed|cannot connect"
        )


def test_bearer_token_is_sent_and_a_missing_one_fails(
    opa: OpaStandIn, opa_url: str, make_engine: MakeEngine
) -> None:
    opa.token = "s3cret-token"
    engine = make_engine(opa_url, token="s3cret-token")
    engine.load({"release.rego": RELEASE}, DATA)
    assert engine.evaluate(DECISION, INPUTS[0])["allow"] is True
    wrong = make_engine(opa_url, token="guess")
    failure = _fails_within_bound(
        lambda: wrong.evaluate(DECISION, INPUTS[0]), "answered 401.*authentication required"
    )
    _fails_within_bound(lambda: make_engine(opa_url).load({}, {}), "answered 401")
    assert "s3cret" not in failure.message and "guess" not in failure.message
