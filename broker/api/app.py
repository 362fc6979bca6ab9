"""The HTTPS API (FastAPI): built by ``create_app``, nothing at import time.

Every route depends on ``current_peer``: the client certificate the TLS layer verified, checked
again against the current CRL. One error shape for every ``BrokerError``:
``{"error": <class name>, "detail": <message>}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from broker.api.feeds import feeds_router
from broker.api.mdms import mdms_router
from broker.api.oauth import Caller, InsufficientScope, install_oauth, require_token
from broker.api.peer import PeerDep
from broker.api.regulator import regulator_router
from broker.api.schemas import ErrorBody
from broker.api.tls import RevocationCheck
from broker.errors import BrokerError, Throttled
from broker.oauth.settings import OAuthSettings
from broker.release.feeds import FeedService
from broker.release.pipeline import open_pipeline
from broker.runtime import Runtime, limit_settings
from connectors.mdms.limits import Limits, LimitSettings


class Health(BaseModel):
    status: str
    peer: str
    role: str | None


class ClientRate:
    """A token bucket of requests per client certificate (T7, C1.8): the MDMS's limiter, one
    token a request; over it, 429 with Retry-After before any work."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self._limits = Limits(LimitSettings(rate_frames_per_s=rate_per_s, burst_frames=burst))

    def __call__(self, peer: PeerDep) -> None:
        wait = self._limits.retry_after_rate(peer.name, 1)
        if wait:
            raise Throttled(f"{peer.name} makes requests too often; retry in {wait} s", wait)


def feed_recipient(caller: Annotated[Caller, Depends(require_token())]) -> str:
    """Feeds are for callers with a certificate-bound token that may read feeds: third parties
    (``feeds:read``) and the operator's EMS (``ems:read``, aggregate feeds only by policy)."""
    if not caller.scopes & {"feeds:read", "ems:read"}:
        raise InsufficientScope(["feeds:read"])
    return caller.recipient_id


async def _broker_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BrokerError)
    body = ErrorBody(error=type(exc).__name__, detail=exc.message)
    headers: dict[str, str] | None = getattr(exc, "headers", None)
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=headers)


def create_app(
    revocations: RevocationCheck,
    rt: Runtime | None = None,
    limits: Limits | None = None,
    oauth: OAuthSettings | None = None,
) -> FastAPI:
    """The API; with a runtime it also serves the MDMS ingest routes, the regulator's routes,
    the OAuth token endpoint and the recipients registry."""
    errors: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}}
    app = FastAPI(title="Smart-meter data broker (ITU-T X.1332)", version="0.1.0", responses=errors)
    app.state.revocations = revocations
    app.add_exception_handler(BrokerError, _broker_error)
    if rt is not None:
        app.include_router(mdms_router(rt, limits or Limits(limit_settings(rt.settings))))
        rate = [Depends(ClientRate(rt.settings.api_rate_per_s, rt.settings.api_burst))]
        app.include_router(regulator_router(rt), dependencies=rate)
        install_oauth(app, rt, oauth)
        feeds = FeedService(rt.db, open_pipeline(rt), rt.clock, rt.hasher)
        app.include_router(feeds_router(feeds, feed_recipient), dependencies=rate)

    @app.get("/healthz", summary="Liveness, and who the server thinks you are")
    def healthz(peer: PeerDep) -> Health:
        """Liveness, and who the server thinks you are."""
        return Health(status="ok", peer=peer.name, role=peer.role)

    return app
