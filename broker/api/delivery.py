"""Routes of push delivery and deletion.

- ``GET /.well-known/jwks.json``: the broker's delivery signing key (RFC 9421 signatures on
  webhook pushes, JWS of deletion requests), for recipients to verify offline.
- ``GET /v1/deliveries``: the caller's webhook deliveries and their receipts (status,
  attempts, body digest, the recipient's own signed receipt if it sent one).
- ``GET /v1/deletions``: the caller's deletion requests (recipients without a webhook poll
  here); ``POST /v1/deletions/{id}/ack``: the signed acknowledgement.
- ``GET /v1/regulator/deletions``: every recipient's requests, ``status=overdue`` for those
  past their deadline without an acknowledgement (role ``regulator``; audited).

Each route takes what it needs from the one table (``broker.oauth.scopes.ROUTES``):
deliveries take ``feeds:read`` (``ems:read``); deletion requests ``deletions:read``, their
acknowledgement ``deletions:write``; the regulator's view a ``regulator`` certificate; the key
set any certificate of the broker's CA.

No ``from __future__ import annotations``: FastAPI resolves the routes' annotations.
"""

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from broker.api.access import Caller, access
from broker.api.schemas import ErrorBody
from broker.audit.events import AuditEvent
from broker.delivery import deletion
from broker.delivery.outbox import delivery_json
from broker.delivery.signing import load_delivery_key, public_jwk
from broker.kit.text import Text
from broker.runtime.core import Runtime
from broker.runtime.wiring import open_deletions, open_outbox

DeletionStatusQuery = Annotated[
    str | None,
    Query(
        pattern="^(requested|acknowledged|overdue)$",
        description="requested: not acknowledged yet (overdue ones included); overdue: past "
        "the deadline without an acknowledgement; acknowledged",
    ),
]
Limit = Annotated[int, Query(ge=1, le=500)]


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ack: Text = Field(
        max_length=16_384,
        description="Compact JWS, typ x1332-deletion-ack+jws, signed with a key you registered, "
        'over {"deletion_id", "recipient", "release_ids", "deleted_at"}',
    )


def install_delivery(app: FastAPI, rt: Runtime, dependencies: Sequence[Any] = ()) -> None:
    """The delivery routes; ``dependencies`` (the per-client rate limit) apply to each."""
    app.include_router(delivery_router(rt), dependencies=list(dependencies))


def delivery_router(rt: Runtime) -> APIRouter:
    router = APIRouter(
        tags=["delivery"],
        responses={
            401: {"model": ErrorBody, "description": "no valid certificate-bound token"},
            403: {"model": ErrorBody, "description": "not allowed for this caller"},
        },
    )
    KeySet = Annotated[Caller, Depends(access("GET", "/.well-known/jwks.json"))]
    Deliveries = Annotated[Caller, Depends(access("GET", "/v1/deliveries"))]
    Deletions = Annotated[Caller, Depends(access("GET", "/v1/deletions"))]
    Ack = Annotated[Caller, Depends(access("POST", "/v1/deletions/{deletion_id}/ack"))]
    Regulator = Annotated[Caller, Depends(access("GET", "/v1/regulator/deletions"))]
    outbox = open_outbox(rt)
    deletions = open_deletions(rt, outbox)
    jwks = {"keys": [public_jwk(load_delivery_key(rt.settings))]}

    @router.get("/.well-known/jwks.json", summary="The broker's delivery signing keys (JWKS)")
    def keys(_who: KeySet) -> dict[str, Any]:
        return jwks

    @router.get("/v1/deliveries", summary="Your webhook deliveries and their receipts")
    def my_deliveries(
        who: Deliveries,
        status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        with rt.db.transaction() as session:
            found = outbox.deliveries(session, who.recipient_id, status, limit)
            return [delivery_json(r) for r in found]

    @router.get("/v1/deletions", summary="Deletion requests addressed to you")
    def my_deletions(
        who: Deletions, status: DeletionStatusQuery = None, limit: Limit = 100
    ) -> list[dict[str, Any]]:
        with rt.db.transaction() as session:
            return deletion.find(session, rt.clock.now(), status, who.recipient_id, limit)

    @router.post(
        "/v1/deletions/{deletion_id}/ack",
        summary="Acknowledge a deletion (signed)",
        responses={
            404: {"model": ErrorBody, "description": "no such request of yours"},
            409: {"model": ErrorBody, "description": "already acknowledged"},
            422: {"model": ErrorBody, "description": "the acknowledgement does not verify"},
        },
    )
    def acknowledge(deletion_id: str, body: Acknowledgement, who: Ack) -> dict[str, Any]:
        with rt.db.transaction() as session:
            return deletions.acknowledge(session, who.recipient_id, deletion_id, body.ack)

    @router.get(
        "/v1/regulator/deletions",
        tags=["regulator"],
        summary="Deletion requests of every recipient; status=overdue for missed deadlines",
    )
    def regulator_deletions(
        regulator: Regulator,
        status: DeletionStatusQuery = None,
        recipient: Annotated[str | None, Query(max_length=120)] = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        peer = regulator.peer
        with rt.db.transaction() as session:
            found = deletion.find(session, rt.clock.now(), status, recipient, limit)
            details = {"what": "deletions", "status": status, "recipient": recipient}
            event = AuditEvent("regulator.read", f"cert:{peer.name}", None, details)
            rt.audit.record(session, [event])
        return found

    return router
