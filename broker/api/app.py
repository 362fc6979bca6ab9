"""The HTTPS API (FastAPI): built by ``create_app``, nothing at import time.

Every route depends on ``current_peer``: the client certificate the TLS layer verified, checked
again against the current CRL. One error shape for every ``BrokerError``, every request FastAPI
cannot validate and every unknown route: ``{"error": <class name>, "detail": <message>}``,
documented for every operation of ``/openapi.json`` (``broker.api.schemas``). What each route
needs (a bound token's scope, a certificate's role) comes from one table
(``broker.oauth.scopes.ROUTES``, ``broker.api.access``); the document names it per operation.

Limits before any work (T7, C1.8, ``broker.api.limits``): every body is bounded
(``BROKER_API_MAX_BODY_BYTES``, 413), except on the two routes that bound their own (MDMS ingest,
token endpoint); the feeds, regulator and recipients routes share one token bucket per client
certificate (``Depends(client_rate)``: 429 with Retry-After), and so does any router included
with those dependencies (the OpenAPI document then names its 429 too).

Outermost, ``broker.api.hardening``: no-store, nosniff and HSTS on every answer, control
characters in a path or query refused (422), and a bug answered 500 in the one error shape on a
connection that stays usable. No Swagger UI or ReDoc (their assets came from a public CDN); the
description is at ``/openapi.json`` for callers with a certificate.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from broker.api.delivery import install_delivery
from broker.api.feeds import feeds_router
from broker.api.hardening import install_hardening
from broker.api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit, ClientRate, client_rate
from broker.api.mdms import mdms_router
from broker.api.oauth import install_oauth
from broker.api.peer import PeerDep
from broker.api.regulator import regulator_router
from broker.api.schemas import (
    document_error_family,
    document_security,
    error_json,
    error_responses,
    install_error_family,
)
from broker.api.tls import RevocationCheck
from broker.errors import BrokerError
from broker.oauth.settings import OAuthSettings
from broker.runtime.core import Runtime, limit_settings
from broker.runtime.wiring import open_feeds
from connectors.mdms.limits import Limits

__all__ = ["OWN_BODY_BOUNDS", "ClientRate", "Health", "create_app"]
OWN_BODY_BOUNDS = frozenset({"/mdms/v1/frames", "/oauth/token"})
"""Routes that read their bodies themselves, up to their own bounds (413 beyond)."""


class Health(BaseModel):
    status: str
    peer: str
    role: str | None


async def _broker_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BrokerError)
    headers: dict[str, str] | None = getattr(exc, "headers", None)
    return error_json(type(exc).__name__, exc.message, exc.status_code, headers)


def create_app(
    revocations: RevocationCheck,
    rt: Runtime | None = None,
    limits: Limits | None = None,
    oauth: OAuthSettings | None = None,
) -> FastAPI:
    """The API; with a runtime it also serves the MDMS ingest routes, the regulator's routes,
    the OAuth token endpoint and the recipients registry."""
    app = FastAPI(
        title="Smart-meter data broker (ITU-T X.1332)",
        version="0.1.0",
        responses=error_responses(401, 403),
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a public CDN
        redoc_url=None,
    )
    app.state.revocations = revocations
    app.add_exception_handler(BrokerError, _broker_error)
    install_error_family(app)
    document_error_family(app, client_rate)
    document_security(app)
    max_body = DEFAULT_MAX_BODY_BYTES
    if rt is not None:
        max_body = rt.settings.api_max_body_bytes
        app.state.client_rate = ClientRate(rt.settings.api_rate_per_s, rt.settings.api_burst)
        rate = [Depends(client_rate)]
        app.include_router(mdms_router(rt, limits or Limits(limit_settings(rt.settings))))
        app.include_router(regulator_router(rt), dependencies=rate)
        install_oauth(app, rt, oauth)
        feeds = open_feeds(rt)
        app.include_router(feeds_router(feeds), dependencies=rate)  # scopes: ROUTES
        install_delivery(app, rt, rate)
    app.add_middleware(BodyLimit, max_bytes=max_body, exempt=OWN_BODY_BOUNDS)
    install_hardening(app, rt.settings if rt is not None else None)  # outermost

    @app.get("/healthz", summary="Liveness, and who the server thinks you are")
    def healthz(peer: PeerDep) -> Health:
        """Liveness, and who the server thinks you are."""
        return Health(status="ok", peer=peer.name, role=peer.role)

    return app
