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
from broker.api.tls import Peer
from broker.errors import Forbidden
from broker.oauth.scopes import ROUTES, Access, Narrowing, narrowing

if TYPE_CHECKING:
    from broker.api.oauth import TokenGuard
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
