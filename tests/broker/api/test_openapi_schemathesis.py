"""The API's ``/openapi.json`` against the running HTTPS server (T7, C1.8; OWASP API9).

The document of the fully wired app names every operation's error family (401, 403; 422 where
it takes parameters or a body; 413 where it takes a body; 429 where it is rate-limited), each
in the one error shape. Schemathesis then loads the live document and fuzzes every operation
through the real server, authenticated as a third party would be (its client certificate and
an access token bound to it), as an operator and as a regulator: no answer is a server error,
and every answer is one the document names, of the content type and schema it names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.broker.api.test_limits import bearer, issued, operator, running_broker
from tests.broker.oauth.conftest import Broker, Party

pytestmark = pytest.mark.timeout(120)
ERROR_REF = "#/components/schemas/ErrorBody"
SELF_LIMITED = {("/oauth/token", "post"), ("/mdms/v1/frames", "post")}
"""Routes that keep their own token buckets (per client and per frame)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
REJECTED = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
"""What invalid data may get: a refusal, never a success or a server error."""
REPORT = 1500
FUZZ = settings(
    max_examples=6,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tmp = tmp_path_factory.mktemp("openapi")
    with running_broker(tmp, api_rate_per_s=10_000, api_burst=10_000) as running_one:
        yield running_one


def _schema(broker: Broker, who: Party, headers: dict[str, str] | None = None) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "base-url": broker.url,
            "tls-verify": str(broker.ca_pem),
            "request-cert": str(who.cert),
            "request-cert-key": str(who.key),
            "headers": headers or {},
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
            "checks": {"negative_data_rejection": {"expected-statuses": REJECTED}},
        }
    )
    return schemathesis.openapi.from_url(f"{broker.url}/openapi.json", config=config)


@pytest.fixture(scope="module")
def as_third_party(broker: Broker) -> Any:
    acme = broker.onboard("acme")
    scopes = "feeds:read feeds:write deletions:read deletions:write"
    return _schema(broker, acme, bearer(broker, acme, scopes))


@pytest.fixture(scope="module")
def as_operator(broker: Broker) -> Any:
    return _schema(broker, operator(broker)).include(path_regex="^/v1/recipients")


@pytest.fixture(scope="module")
def as_regulator(broker: Broker) -> Any:
    return _schema(broker, issued(broker, "ofgem", "regulator")).include(
        path_regex="^/v1/regulator"
    )


def _run(
    operation: Any,
    mode: GenerationMode,
    checks: list[Any],
    session: requests.Session,
    seen: Counter[int],
) -> None:
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        seen[case.call_and_validate(session=session, checks=checks).status_code] += 1

    run()


def _fuzz(schema: Any) -> tuple[list[str], Counter[int]]:
    """Every operation of ``schema``, with valid data and, where it takes any, invalid data:
    what failed, and how (the first lines of each report), and the statuses seen. One session
    keeps its connections alive (a TLS handshake a case would cost more than the case)."""
    failures, seen = [], Counter[int]()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        takes_input = operation.body or any(operation.iter_parameters())
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * bool(takes_input)
        # Invalid query and path values are strings on the wire all the same ("true", "null"):
        # only a body's invalid data must be refused; any invalid data must not break a route.
        checks = CHECKS + [negative_data_rejection] * bool(operation.body)
        for mode in modes:
            try:
                _run(operation, mode, checks, session, seen)
            except Unsatisfiable:  # no invalid value exists (any string is a valid path segment)
                continue
            except Exception as exc:  # the report names the operation, the case and the check
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:REPORT]}")
    session.close()
    return failures, seen


def _authenticated(seen: Counter[int]) -> bool:
    """Some calls succeeded and none was refused for its credentials: the fuzzing got in."""
    return any(200 <= status < 300 for status in seen) and 401 not in seen


def test_T7_every_operation_as_a_third_party_with_a_bound_token(as_third_party: Any) -> None:
    failures, seen = _fuzz(as_third_party)
    assert failures == [] and _authenticated(seen), seen


def test_C3_2_recipients_routes_as_an_operator(as_operator: Any) -> None:
    failures, seen = _fuzz(as_operator)
    assert failures == [] and _authenticated(seen), seen


def test_T7_regulator_routes_as_a_regulator(as_regulator: Any) -> None:
    failures, seen = _fuzz(as_regulator)
    assert failures == [] and _authenticated(seen), seen


def test_T7_C1_8_openapi_documents_every_operation_and_its_error_family(broker: Broker) -> None:
    with broker.client(operator(broker, "reader")) as client:
        spec = client.get("/openapi.json").json()
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 20
    for path, method, op in operations:
        needed = {"401", "403"}
        if op.get("parameters") or op.get("requestBody"):
            needed.add("422")
        if op.get("requestBody"):
            needed |= {"400", "413"}
        if path.startswith("/v1/") or (path, method) in SELF_LIMITED:
            needed.add("429")
            assert "Retry-After" in op["responses"]["429"]["headers"], (path, method)
        for status in needed:
            entry = op["responses"].get(status)
            assert entry is not None, f"{method.upper()} {path} does not document {status}"
            assert entry["description"], (path, method, status)
            schema = entry["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (path, method, status)
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "detail"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    # how each operation authenticates: mutual TLS always, the bound token where it is checked
    # (with its scopes: tests/broker/api/test_route_scopes.py)
    assert set(spec["components"]["securitySchemes"]) == {"mutualTLS", "boundToken"}
    for path, method, op in operations:
        token = path.startswith(("/v1/feeds", "/v1/deliveries", "/v1/deletions"))
        for requirement in op["security"]:
            assert set(requirement) == ({"mutualTLS", "boundToken"} if token else {"mutualTLS"}), (
                path,
                method,
            )
