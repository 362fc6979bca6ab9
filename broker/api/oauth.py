"""The OAuth 2.0 routes and the token check every resource route uses (C3.2, R3.3, T7, C1.8).

``oauth_router`` serves ``POST /oauth/token`` (client credentials; ``tls_client_auth`` or
``private_key_jwt``, see ``broker.oauth.server``). Limits come before any work: the body is
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

from broker.api.access import Caller
from broker.api.mdms import _read_body
from broker.api.peer import PeerDep
from broker.api.recipients import recipients_router
from broker.api.schemas import ErrorBody
from broker.api.tls import Peer
from broker.errors import Throttled
from broker.kit.clock import from_us, to_rfc3339
from broker.kit.text import text_problem
from broker.oauth.scopes import Access, InsufficientScope, missing
from broker.oauth.server import BrokerAuthorizationServer
from broker.oauth.settings import OAuthSettings
from broker.oauth.tokens import InvalidToken, TokenCodec, load_token_key, thumbprint
from broker.recipients.models import Recipient, Status
from broker.runtime import Runtime
from broker.storage.db import Database
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


class TokenGuard:
    """Checks bearer tokens for resource routes (one per app, in ``app.state.token_guard``)."""

    def __init__(self, codec: TokenCodec, db: Database) -> None:
        self._codec, self._db = codec, db

    def check(self, authorization: str | None, peer: Peer, needed: tuple[str, ...]) -> Caller:
        """The caller, if its token is valid here and carries every scope in ``needed``."""
        caller = self._verified(authorization, peer)
        lacking = sorted(set(needed) - caller.scopes)
        if lacking:
            raise InsufficientScope(lacking)
        return caller

    def check_access(self, authorization: str | None, peer: Peer, access: Access) -> Caller:
        """The caller, if its token is valid here and carries one of ``access.scopes``."""
        caller = self._verified(authorization, peer)
        refused = missing(access, caller.scopes)
        if refused is not None:
            raise refused
        return caller

    def _verified(self, authorization: str | None, peer: Peer) -> Caller:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidToken("send the access token as 'Authorization: Bearer <token>'")
        token = self._codec.verify(value.strip())
        if token.x5t_s256 != thumbprint(peer.fingerprint):
            raise InvalidToken("the access token is bound to another client certificate")
        with self._db.transaction() as session:
            recipient = session.get(Recipient, token.recipient_id)
            status = recipient.status if recipient else "unknown"
            suspended_us = recipient.suspended_us if recipient else None
        if status != Status.active:
            raise InvalidToken(f"recipient {token.recipient_id} is {status}")
        if suspended_us is not None and token.issued_at * 1_000_000 <= suspended_us:
            # iat has whole seconds: a token of the suspension's second is refused too
            raise InvalidToken(
                f"the access token was issued before {token.recipient_id} was suspended "
                f"(at {to_rfc3339(from_us(suspended_us))}); ask for a new token"
            )
        return Caller(token.recipient_id, token.scopes, peer, token)


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
