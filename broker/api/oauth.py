"""The OAuth 2.0 routes and the token check every resource route uses (C3.2, R3.3, T7, C1.8).

``oauth_router`` serves ``POST /oauth/token`` (client credentials; ``tls_client_auth`` or
``private_key_jwt``, see ``broker.oauth.service``). Limits come before any work: the body is
read up to ``max_body_bytes`` (413) and each client certificate has a token bucket of requests
(429 + Retry-After). ``TokenGuard`` checks the token of a resource route: it must be the
broker's, unexpired, for its audience, shown over a connection whose certificate is the one it
is bound to, of a recipient still active and not issued before the recipient's last suspension
(a reinstatement does not revive it), and carry the route's scope: one of those ``ROUTES`` names
for it (``broker.api.access``), or every one named by ``require_token(*scopes)``.

Wiring: ``install_oauth(app, rt)`` sets ``app.state.token_guard`` and includes the routers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from broker.api.access import Caller, TokenGuard
from broker.api.mdms import _read_body
from broker.api.peer import PeerDep
from broker.api.recipients import recipients_router
from broker.api.schemas import ErrorBody
from broker.ca.peer import Peer
from broker.errors import Throttled
from broker.kit.text import text_problem
from broker.oauth.errors import InsufficientScope
from broker.oauth.service import BrokerAuthorizationServer
from broker.oauth.settings import OAuthSettings
from broker.oauth.tokens import TokenCodec, load_token_key
from broker.runtime.core import Runtime
from connectors.mdms.limits import Limits, LimitSettings

FORM = "application/x-www-form-urlencoded"


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OAuthErrorBody(BaseModel):
    """RFC 6749 §5.2."""

    error: str
    error_description: str | None = None


def require_token(*needed: str) -> Callable[..., Any]:
    """A dependency: the caller's verified, bound token with every scope in ``needed``."""

    async def dependency(request: Request, peer: PeerDep) -> Caller:
        # marked below: /openapi.json names the token and its scopes on these operations
        guard: TokenGuard = request.app.state.token_guard
        header = request.headers.get("authorization")
        return await anyio.to_thread.run_sync(guard.check, header, peer, needed)

    dependency.security = [{"mutualTLS": [], "boundToken": list(needed)}]  # type: ignore[attr-defined]
    return dependency


def token_limits(settings: OAuthSettings) -> Limits:
    """A token bucket of requests per client certificate (the MDMS's limiter, one token a
    request)."""
    return Limits(
        LimitSettings(
            max_body_bytes=settings.max_body_bytes,
            rate_frames_per_s=settings.rate_per_s,
            burst_frames=settings.burst,
        )
    )


_TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OAuthErrorBody,
        "description": "RFC 6749 §5.2: invalid_request, "
        "invalid_client, invalid_scope, unsupported_grant_type, unauthorized_client",
    },
    413: {"model": ErrorBody, "description": "PayloadTooLarge: the body is over the limit"},
    415: {"model": ErrorBody, "description": f"UnsupportedMediaType: send {FORM}"},
    429: {"model": ErrorBody, "description": "Throttled: too many token requests; Retry-After"},
}


def _parse_form(body: bytes) -> dict[str, str] | str:
    """The form's fields, or why it is malformed (RFC 6749 §3.2: no repeated parameters)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        return "the body is not a UTF-8 form"
    form = dict(pairs)
    if len(form) != len(pairs):
        return "a parameter is repeated"
    if any(text_problem(key) or text_problem(value) for key, value in pairs):
        return "a parameter holds a control character"
    return form


def oauth_router(
    rt: Runtime, codec: TokenCodec, settings: OAuthSettings, limits: Limits | None = None
) -> APIRouter:
    router = APIRouter(prefix="/oauth", tags=["oauth"])
    limits = limits or token_limits(settings)

    def answer(form: dict[str, str], peer: Peer) -> tuple[int, dict[str, Any], list[Any]]:
        with rt.db.transaction() as session:
            server = BrokerAuthorizationServer(session, peer, codec, settings, rt.clock, rt.audit)
            return server.token_response(settings.token_endpoint, form)

    @router.post(
        "/token",
        summary="Client credentials: a short-lived token bound to your client certificate",
        response_model=TokenResponse,
        responses=_TOKEN_RESPONSES,
    )
    async def token(request: Request, peer: PeerDep) -> JSONResponse:
        """Client credentials: a short-lived token bound to your client certificate."""
        wait = limits.retry_after_rate(peer.name, 1)
        if wait:
            raise Throttled(f"{peer.name} asks for tokens too often; retry in {wait} s", wait)
        body = await _read_body(request, settings.max_body_bytes)
        media = request.headers.get("content-type", "").split(";")[0].strip()
        form = _parse_form(body) if media == FORM else f"send {FORM}, not {media or 'nothing'}"
        if isinstance(form, str):
            error = {"error": "invalid_request", "error_description": form}
            return JSONResponse(error, status_code=400, headers=_NO_STORE)
        status, payload, headers = await anyio.to_thread.run_sync(answer, form, peer)
        return JSONResponse(payload, status_code=status, headers=dict(headers) | _NO_STORE)

    return router


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def install_oauth(
    app: FastAPI, rt: Runtime, settings: OAuthSettings | None = None, limits: Limits | None = None
) -> TokenGuard:
    """Add the token endpoint and the recipients routes to ``app`` and set its token guard."""
    settings = settings or OAuthSettings()
    codec = TokenCodec(load_token_key(rt.settings), settings, rt.clock)
    guard = app.state.token_guard = TokenGuard(codec, rt.db)
    app.include_router(oauth_router(rt, codec, settings, limits))
    app.include_router(recipients_router(rt))
    return guard


CallerDep = Annotated[Caller, Depends(require_token())]
"""A caller with a valid bound token, whatever its scopes (the API's routes take theirs from
``ROUTES`` with ``broker.api.access.access``)."""

__all__ = [
    "Caller",
    "CallerDep",
    "InsufficientScope",
    "TokenGuard",
    "install_oauth",
    "require_token",
]
