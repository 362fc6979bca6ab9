"""A stand-in for an OPA server, so that ``connectors.opa`` is tested over real HTTPS on loopback.

This is NOT OPA. No OPA binary can be installed on the build machine (it is not on PyPI, Debian
or npm, and Go modules cannot be fetched), so this small server speaks the subset of OPA's REST
API the client uses, with the request and answer shapes of OPA's reference
(https://www.openpolicyagent.org/docs/rest-api):

- ``GET /v1/policies`` -> ``{"result": [{"id", "raw"}]}`` (no ``ast``);
- ``GET|PUT|DELETE /v1/policies/<id>``: PUT takes ``text/plain`` Rego and answers 200 ``{}``, or
  400 ``{"code": "invalid_parameter", "message": ..., "errors": [...]}`` when the module is
  refused; unknown ids are 404 ``resource_not_found``;
- ``PUT|DELETE /v1/data/<path>``: 204 without a body; PUT creates missing parents (``mkdir -p``);
  a path through a non-object is 404 (write conflict);
- ``POST /v1/data/<path>`` with ``{"input": ...}`` -> ``{"result": value}``, or ``{}`` when the
  document is undefined; with ``strict-builtin-errors=true`` an evaluation error is
  500 ``internal_error``, without it the document is undefined (OPA's default for builtin errors);
- ``GET /health`` -> 200 ``{}``; a bearer token, when set, is required on every request
  (401 ``unauthorized``, as ``--authentication=token``).

It evaluates with regorus (``EmbeddedEngine.build``), so it refuses only what regorus refuses when
a module is added (parse errors, Rego v0 syntax), where OPA also type-checks and checks safety at
PUT time; regorus cannot tell a builtin error from other evaluation errors. ``Faults`` make it
fail the way a sick server does: every answer with a status, or a body of the test's choosing
(not JSON, or JSON OPA never sends), a delay.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from broker.rego.engine import EmbeddedEngine, PolicyLoadError, clean_engine_message, rule_ref

Handler = Callable[[Request], Awaitable[Response]]  # starlette's call_next


@dataclass
class Faults:
    """How the stand-in misbehaves; all off by default."""

    status: int | None = None  # answer every request with this status and an OPA error body
    body: str | None = None  # answer every request 200 with this body
    delay_s: float = 0.0  # wait this long before answering


@dataclass
class OpaStandIn:
    """The server's state: policies by id, the data tree, and every request it saw."""

    token: str | None = None
    faults: Faults = field(default_factory=Faults)
    policies: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)  # "METHOD /path?query"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put_policy(self, pid: str, text: str) -> Response:
        with self._lock:
            refused = self._rebuild({**self.policies, pid: text}, self.data)
        return refused or JSONResponse({})

    def delete_policy(self, pid: str) -> Response:
        with self._lock:
            if pid not in self.policies:
                return error(
                    404, "resource_not_found", f'storage_not_found_error: policy id "{pid}"'
                )
            rest = {k: v for k, v in self.policies.items() if k != pid}
            refused = self._rebuild(rest, self.data)
        return refused or JSONResponse({})

    def put_data(self, path: list[str], value: Any) -> Response:
        with self._lock:
            data = json.loads(json.dumps(self.data))
            parent = _descend(data, path[:-1], create=True)
            if parent is None:
                return error(404, "resource_conflict", f"write conflict: /{'/'.join(path)}")
            parent[path[-1]] = value
            refused = self._rebuild(self.policies, data)
        return refused or Response(status_code=204)

    def delete_data(self, path: list[str]) -> Response:
        with self._lock:
            data = json.loads(json.dumps(self.data))
            parent = _descend(data, path[:-1], create=False)
            if parent is None or path[-1] not in parent:
                return error(404, "resource_not_found", f"/{'/'.join(path)}: document not found")
            del parent[path[-1]]
            refused = self._rebuild(self.policies, data)
        return refused or Response(status_code=204)

    def query(self, path: str, input_doc: Any, strict: bool) -> Response:
        with self._lock:
            engine = EmbeddedEngine.build(self.policies, self.data)
        try:
            engine.set_input_json(json.dumps(input_doc))
            answer = json.loads(engine.eval_query_as_json(rule_ref(path)))
        except RuntimeError as exc:
            if not strict:
                return JSONResponse({})
            return error(500, "internal_error", clean_engine_message(str(exc)))
        rows = answer.get("result", [])
        return JSONResponse({"result": rows[0]["expressions"][0]["value"]} if rows else {})

    def _rebuild(self, policies: dict[str, str], data: dict[str, Any]) -> Response | None:
        """Take the new state if regorus accepts it whole; else OPA's 400 and no change. (A regorus
        engine must be dropped on the thread that made it, so each request builds its own.)"""
        try:
            EmbeddedEngine.build(policies, data)
        except PolicyLoadError as exc:
            detail = {"code": "rego_parse_error", "message": exc.message}
            return error(
                400, "invalid_parameter", "error(s) occurred while compiling module(s)", [detail]
            )
        self.policies, self.data = policies, data
        return None


def _descend(data: dict[str, Any], path: list[str], create: bool) -> dict[str, Any] | None:
    node = data
    for key in path:
        if create and key not in node:
            node[key] = {}
        child = node.get(key)
        if not isinstance(child, dict):
            return None
        node = child
    return node


def error(
    status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status)


def create_standin_app(opa: OpaStandIn) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def gate(request: Request, call_next: Handler) -> Response:
        opa.seen.append(f"{request.method} {request.url.path}?{request.url.query}")
        if opa.token and request.headers.get("authorization") != f"Bearer {opa.token}":
            return error(401, "unauthorized", "authentication required")
        await asyncio.sleep(opa.faults.delay_s)
        if opa.faults.body is not None:
            return Response(opa.faults.body, 200, media_type="application/json")
        if opa.faults.status is not None:
            return error(opa.faults.status, "internal_error", "the stand-in was told to fail")
        answer: Response = await call_next(request)
        return answer

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({})

    @app.get("/v1/policies")
    async def list_policies() -> Response:
        items = [{"id": pid, "raw": raw} for pid, raw in sorted(opa.policies.items())]
        return JSONResponse({"result": items})

    @app.api_route("/v1/policies/{pid:path}", methods=["GET", "PUT", "DELETE"])
    async def policy(pid: str, request: Request) -> Response:
        if request.method == "PUT":
            return opa.put_policy(pid, (await request.body()).decode())
        if request.method == "DELETE":
            return opa.delete_policy(pid)
        if pid not in opa.policies:
            return error(404, "resource_not_found", f'storage_not_found_error: policy id "{pid}"')
        return JSONResponse({"result": {"id": pid, "raw": opa.policies[pid]}})

    @app.api_route("/v1/data/{path:path}", methods=["PUT", "POST", "DELETE"])
    async def document(path: str, request: Request) -> Response:
        segments = [part for part in path.split("/") if part]
        if request.method == "DELETE":
            return opa.delete_data(segments)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            return error(400, "invalid_parameter", f"body is not JSON: {exc}")
        if request.method == "PUT":
            return opa.put_data(segments, body)
        strict = request.query_params.get("strict-builtin-errors") == "true"
        return opa.query("/".join(segments), body.get("input"), strict)

    return app
