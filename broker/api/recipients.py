"""The recipients registry over HTTPS (C3.2, R3.3): onboarding and cutting off recipients.

Management needs an ``operator`` certificate (the server's own ``broker`` one manages
nothing); a recipient may read its own record, renew its certificate and register its own
assertion keys (each route's roles are in the one table, ``broker.oauth.scopes.ROUTES``).
Request bodies forbid unknown fields (no mass assignment: status and times are never taken
from a body); every route spends a token of the caller's request bucket (``client_rate``, 429)
and bodies are bounded by the app (413).
"""

from __future__ import annotations

import json
from typing import Annotated

import anyio
from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from broker.api.access import Caller, access
from broker.api.limits import client_rate
from broker.api.schemas import error_responses
from broker.ca.peer import Peer
from broker.errors import Forbidden
from broker.kit.clock import from_us, to_rfc3339
from broker.kit.text import DisplayName, JsonObject, MultilineText, Text
from broker.recipients.models import Kind, Recipient
from broker.recipients.service import Registration, purposes_of
from broker.runtime.core import Runtime
from broker.runtime.wiring import open_ca, open_recipients

ONE = "/v1/recipients/{recipient_id}"
Register = Annotated[Caller, Depends(access("POST", "/v1/recipients"))]
ListAll = Annotated[Caller, Depends(access("GET", "/v1/recipients"))]
Show = Annotated[Caller, Depends(access("GET", ONE))]
Certify = Annotated[Caller, Depends(access("POST", ONE + "/certificate"))]
AddKey = Annotated[Caller, Depends(access("POST", ONE + "/keys"))]
Suspend = Annotated[Caller, Depends(access("POST", ONE + "/suspend"))]
Reinstate = Annotated[Caller, Depends(access("POST", ONE + "/reinstate"))]
Revoke = Annotated[Caller, Depends(access("POST", ONE + "/revoke"))]
_ERRORS = error_responses(
    400,
    404,
    409,
    s400="InvalidRecipient: a registration, key or change that cannot be accepted (bad name, "
    "URL, key or state); CAError: a CSR the CA refuses",
    s404="NotFound: no such recipient",
    s409="RecipientExists: the recipient, or a key of that kid, is registered already",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipientCreate(Strict):
    recipient_id: Text = Field(max_length=100)
    display_name: DisplayName = Field(max_length=200)  # customers read it: plain text only
    kind: Kind
    purposes: list[Text] = Field(default_factory=list, max_length=50)
    webhook_url: Text | None = Field(default=None, max_length=2000)


class RecipientPublic(BaseModel):
    recipient_id: str
    display_name: str
    kind: str
    purposes: list[str]
    webhook_url: str | None
    status: str
    created: str
    updated: str


class CsrIn(Strict):
    csr_pem: MultilineText = Field(max_length=16_384)
    days: int | None = Field(default=None, ge=1, le=397)
    """Validity in days; default and most: ``recipient_cert_max_days`` (90)."""


class CertificateOut(BaseModel):
    serial: str
    role: str
    certificate_pem: str


class Reason(Strict):
    reason: Text = Field(min_length=1, max_length=500)


class KeyOut(BaseModel):
    kid: str


def public(row: Recipient) -> RecipientPublic:
    return RecipientPublic(
        recipient_id=row.recipient_id,
        display_name=row.display_name,
        kind=row.kind,
        purposes=purposes_of(row),
        webhook_url=row.webhook_url,
        status=row.status,
        created=to_rfc3339(from_us(row.created_us)),
        updated=to_rfc3339(from_us(row.updated_us)),
    )


def recipients_router(rt: Runtime) -> APIRouter:
    router = APIRouter(
        prefix="/v1/recipients",
        tags=["recipients"],
        responses=_ERRORS,
        dependencies=[Depends(client_rate)],
    )
    service = open_recipients(rt)

    def actor(peer: Peer) -> str:
        return f"cert:{peer.name}"

    @router.post("", status_code=201, summary="Register a recipient (operator)")
    async def register(body: RecipientCreate, who: Register) -> RecipientPublic:
        """Register a recipient (operator)."""
        peer = who.peer
        reg = Registration(**body.model_dump())

        def run() -> RecipientPublic:
            with rt.db.transaction() as session:
                return public(service.register(session, reg, actor(peer)))

        return await anyio.to_thread.run_sync(run)

    @router.get("", summary="List recipients (operator)")
    def list_all(_who: ListAll) -> list[RecipientPublic]:
        """List recipients (operator)."""
        with rt.db.transaction() as session:
            return [public(row) for row in service.all(session)]

    @router.get("/{recipient_id}", summary="One recipient (operator, or the recipient itself)")
    def show(recipient_id: str, _who: Show) -> RecipientPublic:
        """One recipient (operator, or the recipient itself)."""
        with rt.db.transaction() as session:
            return public(service.get(session, recipient_id))

    @router.post("/{recipient_id}/certificate", summary="Certify a recipient's CSR")
    def certify(recipient_id: str, body: CsrIn, who: Certify) -> CertificateOut:
        """Certify a recipient's CSR (operator; or the recipient renewing its own)."""
        csr, by = body.csr_pem.encode(), actor(who.peer)
        with rt.db.transaction() as session:
            issued = service.issue_certificate(
                session, open_ca(rt), recipient_id, csr, by, body.days
            )
        return CertificateOut(
            serial=issued.serial, role=issued.role, certificate_pem=issued.cert_path.read_text()
        )

    @router.post("/{recipient_id}/keys", status_code=201, summary="Register a public JWK")
    def add_key(recipient_id: str, jwk: Annotated[JsonObject, Body()], who: AddKey) -> KeyOut:
        """Register a public JWK for private_key_jwt (operator, or the recipient itself)."""
        peer = who.peer
        if len(json.dumps(jwk)) > 8192:
            raise Forbidden("a JWK of more than 8 KiB is refused")
        with rt.db.transaction() as session:
            return KeyOut(kid=service.add_key(session, recipient_id, jwk, actor(peer)).kid)

    @router.post("/{recipient_id}/suspend", summary="Suspend: refused from the next request")
    def suspend(recipient_id: str, body: Reason, who: Suspend) -> RecipientPublic:
        """Suspend: no token is issued or honoured from the next request, and none issued before
        is honoured again after a reinstatement (operator)."""
        with rt.db.transaction() as session:
            return public(service.suspend(session, recipient_id, actor(who.peer), body.reason))

    @router.post("/{recipient_id}/reinstate", summary="Lift a suspension (operator)")
    def reinstate(recipient_id: str, body: Reason, who: Reinstate) -> RecipientPublic:
        """Lift a suspension (operator); tokens issued before it stay refused."""
        with rt.db.transaction() as session:
            return public(service.reinstate(session, recipient_id, actor(who.peer), body.reason))

    @router.post("/{recipient_id}/revoke", summary="Revoke for good, with its certificates")
    def revoke(recipient_id: str, body: Reason, who: Revoke) -> RecipientPublic:
        """Revoke for good; its certificates are revoked and the CRL republished (operator)."""
        with rt.db.transaction() as session:
            row = service.revoke(session, open_ca(rt), recipient_id, actor(who.peer), body.reason)
            return public(row)

    return router
