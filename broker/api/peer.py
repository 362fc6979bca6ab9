"""Who is calling: the client certificate the TLS layer verified, checked against the CRL and
the CA's record of what it issued.

Every route depends on ``current_peer``; a missing, revoked or unrecorded certificate is refused.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from broker.api.tls import RevocationCheck
from broker.ca.peer import Peer, peer_from_pem
from broker.errors import BrokerError, Forbidden


class Unauthenticated(BrokerError):
    status_code = 401


def current_peer(request: Request) -> Peer:
    """The caller's verified client certificate; revoked, unrecorded or missing → refused."""
    tls: dict[str, Any] = request.scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") or []
    if not chain:
        raise Unauthenticated("a client certificate from the broker's CA is required")
    peer = peer_from_pem(chain[0])
    revocations: RevocationCheck = request.app.state.revocations
    refusal = revocations.refusal(peer)
    if refusal is not None:
        raise Forbidden(refusal)
    return peer


PeerDep = Annotated[Peer, Depends(current_peer)]
