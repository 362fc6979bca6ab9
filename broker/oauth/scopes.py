"""The scopes a token may carry, deny by default (R3.3, R4.3).

A recipient is granted only scopes its kind permits, and only while it has at least one
allowed purpose; ``purpose:<name>`` narrows a token to one purpose the registry allows.

| scope | who may have it | what it opens |
|---|---|---|
| ``feeds:read`` | third_party, researcher, supplier | pull its own feeds' data |
| ``feeds:write`` | third_party, researcher, supplier | create and cancel its subscriptions |
| ``ems:read`` | ems | the feeder-aggregate feed |
| ``purpose:<name>`` | a recipient whose allowed purposes name it | releases for that purpose |
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.recipients.models import Kind

KIND_SCOPES: dict[Kind, frozenset[str]] = {
    Kind.third_party: frozenset({"feeds:read", "feeds:write"}),
    Kind.researcher: frozenset({"feeds:read", "feeds:write"}),
    Kind.supplier: frozenset({"feeds:read", "feeds:write"}),
    Kind.ems: frozenset({"ems:read"}),
}
PURPOSE_PREFIX = "purpose:"


def permitted(kind: Kind, purposes: Iterable[str]) -> frozenset[str]:
    """Every scope a recipient of ``kind`` with these allowed purposes may be granted."""
    allowed = frozenset(PURPOSE_PREFIX + p for p in purposes)
    return KIND_SCOPES[kind] | allowed if allowed else frozenset()


def split(scope: str | None) -> list[str]:
    return sorted(set((scope or "").split()))
