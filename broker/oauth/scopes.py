"""The scopes a token may carry, what each route needs, and how a token is narrowed (R3.3,
R4.3). Deny by default.

A recipient is granted only scopes its kind permits, and only while it has at least one
allowed purpose; ``purpose:<name>`` (purposes the registry allows it) narrows a token to the
purposes named; ``consent:<id>`` (only from the authorization-code flow) to that consent.

- ``feeds:read`` / ``feeds:write`` (third_party, researcher, supplier): read its feeds, pull
  their pages and list its webhook deliveries / create and cancel its subscriptions;
- ``ems:read`` / ``ems:write`` (ems): the same for the EMS (aggregate feeds only, by policy);
- ``deletions:read`` / ``deletions:write`` (every kind): list / acknowledge the deletion
  requests addressed to it;
- ``purpose:<name>`` (a recipient whose allowed purposes name it): narrows every release the
  token makes to the purposes named;
- ``consent:<id>`` (only the code flow's token): narrows every release to that consent.

``ROUTES`` is the one table of what each route needs: a bound token with one of its scopes,
or (the regulator's and the registry's routes, which have no token) a client certificate of one
of its roles, or the certificate of the recipient the path names (``own``).
``broker.api.access.access`` is the dependency every listed route takes from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.oauth.errors import InsufficientScope
from broker.recipients.models import Kind

_DELETIONS = frozenset({"deletions:read", "deletions:write"})
_FEEDS = frozenset({"feeds:read", "feeds:write"}) | _DELETIONS
KIND_SCOPES: dict[Kind, frozenset[str]] = {
    Kind.third_party: _FEEDS,
    Kind.researcher: _FEEDS,
    Kind.supplier: _FEEDS,
    Kind.ems: frozenset({"ems:read", "ems:write"}) | _DELETIONS,
}
PURPOSE_PREFIX = "purpose:"
CONSENT_PREFIX = "consent:"
CODE_FLOW_SCOPES = ("feeds:read", "feeds:write")
"""What a token of the authorization-code flow may do (of what the client is permitted),
always narrowed to its consent."""


@dataclass(frozen=True)
class Access:
    """What a route needs: a bound token with ANY ONE of ``scopes``; or, for routes without a
    token, a client certificate of one of ``roles`` or (``own``) of the recipient the path's
    ``recipient_id`` names; nothing named: any certificate of the broker's CA."""

    scopes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    own: bool = False


READ = Access(scopes=("feeds:read", "ems:read"))
WRITE = Access(scopes=("feeds:write", "ems:write"))
DELETIONS_READ = Access(scopes=("deletions:read",))
DELETIONS_WRITE = Access(scopes=("deletions:write",))
REGULATOR = Access(roles=("regulator",))
MANAGER = Access(roles=("operator",))
MANAGER_OR_OWN = Access(roles=("operator",), own=True)
ANY_CERTIFICATE = Access()

ROUTES: dict[tuple[str, str], Access] = {
    ("POST", "/v1/feeds"): WRITE,
    ("GET", "/v1/feeds/{feed_id}"): READ,
    ("GET", "/v1/feeds/{feed_id}/data"): READ,
    ("DELETE", "/v1/feeds/{feed_id}"): WRITE,
    ("GET", "/v1/deliveries"): READ,
    ("GET", "/v1/deletions"): DELETIONS_READ,
    ("POST", "/v1/deletions/{deletion_id}/ack"): DELETIONS_WRITE,
    ("GET", "/.well-known/jwks.json"): ANY_CERTIFICATE,
    ("GET", "/v1/regulator/audit"): REGULATOR,
    ("GET", "/v1/regulator/export"): REGULATOR,
    ("GET", "/v1/regulator/metrics"): REGULATOR,
    ("GET", "/v1/regulator/deletions"): REGULATOR,
    ("POST", "/v1/recipients"): MANAGER,
    ("GET", "/v1/recipients"): MANAGER,
    ("GET", "/v1/recipients/{recipient_id}"): MANAGER_OR_OWN,
    ("POST", "/v1/recipients/{recipient_id}/certificate"): MANAGER_OR_OWN,
    ("POST", "/v1/recipients/{recipient_id}/keys"): MANAGER_OR_OWN,
    ("POST", "/v1/recipients/{recipient_id}/suspend"): MANAGER,
    ("POST", "/v1/recipients/{recipient_id}/reinstate"): MANAGER,
    ("POST", "/v1/recipients/{recipient_id}/revoke"): MANAGER,
}
"""(method, path) → what the route needs: the one table (``broker.api.access``)."""


def missing(access: Access, granted: frozenset[str]) -> InsufficientScope | None:
    """Why a token with ``granted`` may not use a route of ``access`` (None: it may)."""
    if not access.scopes or granted & set(access.scopes):
        return None
    families = {s.split(":")[0] for s in granted}
    best = [s for s in access.scopes if s.split(":")[0] in families] or list(access.scopes)
    return InsufficientScope(
        best[:1], f"the access token lacks the scope {' or '.join(access.scopes)}"
    )


@dataclass(frozen=True)
class Narrowing:
    """What a token's releases are bounded to: None where it is not narrowed (every purpose
    the registry allows; any consent the policy finds)."""

    purposes: frozenset[str] | None = None
    consents: frozenset[str] | None = None


def narrowing(scopes: Iterable[str]) -> Narrowing:
    named = set(scopes)

    def under(prefix: str) -> frozenset[str] | None:
        found = frozenset(s[len(prefix) :] for s in named if s.startswith(prefix))
        return found or None

    return Narrowing(under(PURPOSE_PREFIX), under(CONSENT_PREFIX))


def permitted(kind: Kind, purposes: Iterable[str]) -> frozenset[str]:
    """Every scope a recipient of ``kind`` with these allowed purposes may be granted."""
    allowed = frozenset(PURPOSE_PREFIX + p for p in purposes)
    return KIND_SCOPES[kind] | allowed if allowed else frozenset()


def split(scope: str | None) -> list[str]:
    return sorted(set((scope or "").split()))
