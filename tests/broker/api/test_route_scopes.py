"""One table gives every route what it needs (X.1332 R3.3, R4.3, T7): the bound token's scope
of the feed, delivery and deletion routes, the certificate role of the regulator's and the
registry's routes. ``/openapi.json`` of the running server names them per operation, and the
token endpoint grants a client every scope of the table its kind may hold."""

from __future__ import annotations

from typing import Any

from fastapi import routing

from broker.api.server import build
from broker.oauth.scopes import KIND_SCOPES, ROUTES
from broker.recipients.models import Kind
from tests.broker.api.test_limits import operator
from tests.broker.oauth.conftest import Broker, broker  # noqa: F401 (the fixture)

TOKEN = "boundToken"
CERTIFICATE = "mutualTLS"
UNGUARDED = {
    ("GET", "/healthz"),  # liveness: any certificate of the CA
    ("POST", "/oauth/token"),  # the client authenticates in the form (RFC 8705, RFC 7523)
    ("POST", "/mdms/v1/frames"),  # the ingest side: concentrator certificates (broker.api.mdms)
    ("GET", "/mdms/v1/metrics"),  # the ingest side: mdms, regulator, broker certificates
}
"""Routes outside the table, and why."""


def _alternatives(operation: dict[str, Any], scheme: str) -> list[list[str]]:
    return sorted(req[scheme] for req in operation["security"] if scheme in req)


def test_R3_3_openapi_names_the_scopes_and_roles_of_each_operation(broker: Broker) -> None:  # noqa: F811
    with broker.client(operator(broker, "reader")) as client:
        spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert _alternatives(paths["/v1/feeds"]["post"], TOKEN) == [["ems:write"], ["feeds:write"]]
    feed = "/v1/feeds/{feed_id}"
    assert _alternatives(paths[feed]["delete"], TOKEN) == [["ems:write"], ["feeds:write"]]
    assert _alternatives(paths[feed]["get"], TOKEN) == [["ems:read"], ["feeds:read"]]
    assert _alternatives(paths[feed + "/data"]["get"], TOKEN) == [["ems:read"], ["feeds:read"]]
    assert _alternatives(paths["/v1/deletions"]["get"], TOKEN) == [["deletions:read"]]
    ack = paths["/v1/deletions/{deletion_id}/ack"]["post"]
    assert _alternatives(ack, TOKEN) == [["deletions:write"]]
    audit = paths["/v1/regulator/audit"]["get"]
    assert audit["security"] == [{CERTIFICATE: ["regulator"]}]
    register = paths["/v1/recipients"]["post"]
    assert _alternatives(register, CERTIFICATE) == [["operator"]]
    show = paths["/v1/recipients/{recipient_id}"]["get"]
    assert _alternatives(show, CERTIFICATE) == [["operator"], ["self"]]
    for item in paths.values():  # every token requirement is over mutual TLS too
        for operation in item.values():
            for requirement in operation["security"]:
                assert CERTIFICATE in requirement, operation
    for (method, path), access in ROUTES.items():  # and the document says what the table says
        operation = paths[path][method.lower()]
        if access.scopes:
            assert _alternatives(operation, TOKEN) == sorted([s] for s in access.scopes)


def test_R3_3_every_route_takes_its_access_from_the_one_table(broker: Broker) -> None:  # noqa: F811
    app = build(broker.rt, "test", poll_s=3600).app
    served: set[tuple[str, str]] = set()
    for route in routing.iter_route_contexts(app.routes):
        if not isinstance(route.original_route, routing.APIRoute):
            continue
        for method in route.methods or ():
            key = (method, route.path_format or "")
            served.add(key)
            keys = {getattr(dep.call, "access_key", None) for dep in route.dependant.dependencies}
            assert key in UNGUARDED or key in keys, f"{key} does not take its access from ROUTES"
    assert set(ROUTES) <= served, set(ROUTES) - served


def test_R4_3_a_client_may_ask_for_read_and_write_scopes_together(broker: Broker) -> None:  # noqa: F811
    acme = broker.onboard("acme")
    grid = broker.onboard("grid", Kind.ems, ("grid_operations",))
    wanted = "deletions:read deletions:write feeds:read feeds:write purpose:personalised_service"
    granted = broker.token(acme, wanted)
    assert granted.status_code == 200, granted.text
    assert granted.json()["scope"] == wanted
    ems = broker.token(grid, "ems:read ems:write")
    assert ems.json()["scope"] == "ems:read ems:write", ems.text
    assert {"feeds:write", "deletions:write"} <= KIND_SCOPES[Kind.supplier]
    assert "feeds:write" not in KIND_SCOPES[Kind.ems]
