"""Schemas every route shares: the one error shape of the API, and its OpenAPI description.

Every expected failure answers ``{"error": <class name>, "detail": <message>}`` (``ErrorBody``):
a ``BrokerError``, a request FastAPI cannot validate (``InvalidRequest``, 422) and a route or
method that does not exist (``NotFound``, ``MethodNotAllowed``) alike. ``error_responses``
writes the OpenAPI entries of that family for a route's ``responses=``;
``document_error_family`` adds, to every operation of an app's ``/openapi.json``, the entries its
shape implies (422 where it takes parameters or a body, 400 and 413 where it takes a body, 429
where the rate limit is among its dependencies), so no route, even one added later, lacks them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorBody(BaseModel):
    """Every expected failure: the error's class and a message a person can act on."""

    error: str
    detail: str


ERROR_REF = "#/components/schemas/ErrorBody"
FASTAPI_422_REF = "#/components/schemas/HTTPValidationError"
INVALID_REQUEST = "InvalidRequest"
METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
FAMILY: dict[int, str] = {
    400: "BadRequest: the body cannot be read at all (bytes that are not UTF-8, say)",
    401: "Unauthenticated or InvalidToken: no client certificate from the broker's CA, or no "
    "valid access token bound to it (WWW-Authenticate says which)",
    403: "Forbidden: the certificate is revoked, or its role, the token's scopes or the policy "
    "do not allow this",
    404: "NotFound: no such object, or not one of the caller's",
    409: "A conflict with the object's state (it exists already, or is stopped)",
    413: "PayloadTooLarge: the body is over the route's byte limit (the detail names it)",
    422: "InvalidRequest: a parameter or the body is not valid (the detail names each field); "
    "or a well-formed request the broker cannot act on (the detail says why)",
    429: "Throttled: over this client's request rate; retry after Retry-After seconds",
}


def error_responses(*statuses: int, **texts: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries in the one error shape: the family's description of each status,
    or ``texts["s404"]`` etc. where a route says more; Retry-After on 429 and 503."""
    return {
        status: {"model": ErrorBody, "description": texts.get(f"s{status}", FAMILY.get(status))}
        | ({"headers": RETRY_AFTER} if status in (429, 503) else {})
        for status in statuses
    }


def describe_invalid(errors: Sequence[Any], most: int = 8) -> str:
    """Validation errors as one line: where, and what is wrong (never the input itself)."""
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'request'}: {e.get('msg', 'invalid')}"
        for e in errors[:most]
    ]
    more = len(errors) - most
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def error_json(
    error: str, detail: str, status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=error, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """422 in the one error shape for a request FastAPI could not validate."""
    assert isinstance(exc, RequestValidationError)
    return error_json(INVALID_REQUEST, describe_invalid(exc.errors()), 422)


async def http_error(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (no such route, method not allowed) in the one error shape."""
    assert isinstance(exc, StarletteHTTPException)
    name = "".join(HTTPStatus(exc.status_code).phrase.title().split())
    detail = exc.detail if isinstance(exc.detail, str) else name
    return error_json(name, detail, exc.status_code, exc.headers)


def install_error_family(app: FastAPI) -> None:
    """Validation failures and Starlette's own refusals answer in the one error shape."""
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _schema_ref(response: dict[str, Any]) -> Any:
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


def _entry(status: int) -> dict[str, Any]:
    entry = {
        "description": FAMILY[status],
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
    }
    return entry | ({"headers": RETRY_AFTER} if status == 429 else {})


def implied_errors(operation: dict[str, Any], rate_limited: bool = False) -> list[int]:
    """The statuses an OpenAPI operation's shape implies: 422 for parameters or a body (FastAPI
    validates them), 400 for a body (one FastAPI cannot even read, such as bytes that are not
    UTF-8), 413 for a body (the app bounds it), 429 where it is rate-limited."""
    implied = [422] if operation.get("parameters") or operation.get("requestBody") else []
    implied += [400, 413] if operation.get("requestBody") else []
    return implied + ([429] if rate_limited else [])


def _tree(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _tree(sub)


def operations_depending_on(
    app: FastAPI, call: Callable[..., Any] | Callable[[Callable[..., Any]], bool]
) -> set[tuple[str, str]]:
    """(path, method) of every route of ``app`` that has ``call`` among its dependencies (or,
    given a predicate marked ``is_predicate``, a dependency it accepts), its routers'
    included."""
    test: Callable[[Any], bool] = (
        call if getattr(call, "is_predicate", False) else (lambda c: c is call)
    )
    found: set[tuple[str, str]] = set()
    for route in routing.iter_route_contexts(app.routes):
        if isinstance(route.original_route, routing.APIRoute) and any(
            test(sub.call) for sub in _tree(route.dependant)
        ):
            found |= {(route.path_format or "", method.lower()) for method in route.methods or ()}
    return found


SECURITY_SCHEMES = {
    "mutualTLS": {
        "type": "mutualTLS",
        "description": "TLS 1.3 with a client certificate from the broker's CA; an operation's "
        "requirement names the certificate roles it admits (self: the certificate of the "
        "recipient the path names)",
    },
    "boundToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from /oauth/token bound to the client certificate "
        "(cnf.x5t#S256, RFC 8705): shown with another certificate it is refused. An "
        "operation's requirements name the scopes it admits, any one of them",
    },
}


def operation_security(app: FastAPI) -> dict[tuple[str, str], list[dict[str, list[str]]]]:
    """(path, method) → the security requirements a dependency of the route declares
    (``security``: ``broker.api.access``, ``require_token``)."""
    found: dict[tuple[str, str], list[dict[str, list[str]]]] = {}
    for route in routing.iter_route_contexts(app.routes):
        if not isinstance(route.original_route, routing.APIRoute):
            continue
        for sub in _tree(route.dependant):
            declared = getattr(sub.call, "security", None)
            if declared is not None:
                methods = route.methods or set()
                found |= {(route.path_format or "", m.lower()): declared for m in methods}
    return found


def document_security(app: FastAPI) -> None:
    """Have ``app.openapi()`` declare how callers authenticate: every operation over mutual
    TLS; those whose route declares its needs (a bound token's scopes, a certificate's roles:
    ``broker.api.access``) with those."""
    build = app.openapi
    done: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        spec = build()
        if not done or done[0] is not spec:
            declared = operation_security(app)
            spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, item in spec.get("paths", {}).items():
                for method, operation in item.items():
                    if method in METHODS:
                        default: list[dict[str, list[str]]] = [{"mutualTLS": []}]
                        operation["security"] = declared.get((path, method), default)
            done[:] = [spec]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def add_error_family(spec: dict[str, Any], rate_limited: set[tuple[str, str]]) -> None:
    """Give every operation of ``spec`` the error entries its shape implies, in the one error
    shape (FastAPI's own 422 entry is replaced: our handler answers in ``ErrorBody``), and
    every 429 and 503 its Retry-After header."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in implied_errors(operation, (path, method) in rate_limited):
                found = responses.get(str(status))
                if found is None or _schema_ref(found) == FASTAPI_422_REF:
                    responses[str(status)] = _entry(status)
            for retry in ("429", "503"):  # a route's own entry may not name the header
                if retry in responses:
                    responses[retry].setdefault("headers", {}).update(RETRY_AFTER)
    if FASTAPI_422_REF not in json.dumps(spec.get("paths", {})):  # every 422 is ours now
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def document_error_family(app: FastAPI, rate_limit: Callable[..., Any] | None = None) -> None:
    """Have ``app.openapi()`` give every operation the error entries its shape implies (what a
    route declares itself stays; 429 where ``rate_limit`` is among its dependencies), each time
    FastAPI builds the document (on its first request, and again when routes were added)."""
    build = app.openapi
    done: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        spec = build()
        if not done or done[0] is not spec:
            limited = operations_depending_on(app, rate_limit) if rate_limit else set()
            add_error_family(spec, limited)
            done[:] = [spec]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
