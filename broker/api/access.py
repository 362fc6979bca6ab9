"""The dependency every guarded route takes from the one table (``broker.oauth.scopes.ROUTES``,
R3.3, R4.3, C3.2).

``access(method, path)`` looks the route up (a route missing from the table fails at startup)
and checks what the table names: a bound access token with one of the route's scopes (checked
by ``app.state.token_guard``, ``broker.api.oauth``), or a client certificate of one of its roles,
or the certificate of the recipient the path names. It answers with the ``Caller``. Each
dependency carries ``access_key`` (the route it guards) and ``security`` (its OpenAPI security
requirements: ``mutualTLS`` with the roles, ``boundToken`` with the scopes, one requirement per
alternative), which ``broker.api.schemas.document_security`` writes into ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Request

from broker.api.peer import PeerDep
from broker.ca.peer import Peer
from broker.errors import Forbidden
from broker.kit.clock import from_us, to_rfc3339
from broker.oauth.errors import InsufficientScope, InvalidToken
from broker.oauth.scopes import ROUTES, Access, Narrowing, missing, narrowing
from broker.oauth.tokens import TokenCodec, thumbprint
from broker.recipients.models import Recipient, Status
from broker.storage.db import Database

if TYPE_CHECKING:
    from broker.oauth.tokens import AccessToken

SELF = "self"
"""The role name ``/openapi.json`` gives "the certificate of the recipient the path names"."""
Requirement = dict[str, list[str]]


@dataclass(frozen=True)
class Caller:
    """Who a call comes from: the connection's certificate and, on token routes, the verified
    token (``recipient_id`` is then the token's recipient, else the certificate's name)."""

    recipient_id: str
    scopes: frozenset[str]
    peer: Peer
    token: AccessToken | None = None

    @property
    def narrowing(self) -> Narrowing:
        """The purposes and consents the token's releases are bounded to."""
        return narrowing(self.scopes)


def security(access: Access) -> list[Requirement]:
    """The OpenAPI security requirements of a route of ``access`` (any one suffices)."""
    if access.scopes:
        return [{"mutualTLS": [], "boundToken": [scope]} for scope in access.scopes]
    roles = [[role] for role in access.roles] + ([[SELF]] if access.own else [])
    return [{"mutualTLS": role} for role in roles] or [{"mutualTLS": []}]


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


def check_certificate(access: Access, route: str, peer: Peer, named: str | None) -> Caller:
    """A caller of a certificate route: its role is one of the table's, or it is the recipient
    the path names (``own``)."""
    itself = access.own and named is not None and peer.name == named
    if access.roles and peer.role not in access.roles and not itself:
        own = " or the recipient's own certificate" if access.own else ""
        raise Forbidden(
            f"{peer.name} (role {peer.role}) may not call {route}: it needs a certificate "
            f"of role {' or '.join(access.roles)}{own}"
        )
    return Caller(peer.name, frozenset(), peer)


def access(method: str, path: str) -> Callable[..., Any]:
    """The dependency of route ``method path``, from ``ROUTES`` (KeyError: not in the table)."""
    need = ROUTES[(method, path)]
    if need.scopes:

        async def dependency(request: Request, peer: PeerDep) -> Caller:
            guard: TokenGuard = request.app.state.token_guard
            header = request.headers.get("authorization")
            return await anyio.to_thread.run_sync(guard.check_access, header, peer, need)

    else:

        async def dependency(request: Request, peer: PeerDep) -> Caller:
            named = request.path_params.get("recipient_id")
            return check_certificate(need, f"{method} {path}", peer, named)

    dependency.access_key = (method, path)  # type: ignore[attr-defined]
    dependency.security = security(need)  # type: ignore[attr-defined]
    return dependency
