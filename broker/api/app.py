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

from broker.api.tls import Peer, RevocationCheck, peer_from_pem
from broker.errors import BrokerError, Forbidden


class Unauthenticated(BrokerError):
    status_code = 401


class ErrorBody(BaseModel):
    error: str
    detail: str


class Health(BaseModel):
    status: str
    peer: str
    role: str | None


def current_peer(request: Request) -> Peer:
    """The caller's verified client certificate; revoked or missing → refused."""
    tls: dict[str, Any] = request.scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") or []
    if not chain:
        raise Unauthenticated("a client certificate from the broker's CA is required")
    peer = peer_from_pem(chain[0])
    revocations: RevocationCheck = request.app.state.revocations
    if revocations.is_revoked(peer.serial):
        raise Forbidden(f"certificate {peer.serial} of {peer.name} is revoked")
    return peer


PeerDep = Annotated[Peer, Depends(current_peer)]


async def _broker_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BrokerError)
    body = ErrorBody(error=type(exc).__name__, detail=exc.message)
    return JSONResponse(body.model_dump(), status_code=exc.status_code)


def create_app(revocations: RevocationCheck) -> FastAPI:
    errors: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}}
    app = FastAPI(title="Smart-meter data broker (ITU-T X.1332)", version="0.1.0", responses=errors)
    app.state.revocations = revocations
    app.add_exception_handler(BrokerError, _broker_error)

    @app.get("/healthz")
    def healthz(peer: PeerDep) -> Health:
        """Liveness, and who the server thinks you are."""
        return Health(status="ok", peer=peer.name, role=peer.role)

    return app
