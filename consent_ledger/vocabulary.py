"""What a consent may name: granularities (fixed), purposes and data categories (given).

Granularities are a fixed ladder because code downstream (aggregation, the policy's "finer than
daily needs explicit consent" rule) reasons about their order in seconds. Purposes and
categories are data a privacy officer edits in the policy bundle's purpose catalogue, so the
ledger takes them as a ``Vocabulary`` from its caller and never hard-codes them;
``DEFAULT_VOCABULARY`` is the seed until the catalogue is the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from consent_ledger.errors import InvalidConsent

GRANULARITY_S: Mapping[str, int] = MappingProxyType(
    {"15min": 900, "30min": 1800, "hourly": 3600, "daily": 86_400, "monthly": 2_592_000}
)
"""Granularity name → interval length in seconds, fine to coarse."""


def coarser_or_equal(a: str, b: str) -> bool:
    """Whether granularity ``a`` is as coarse as ``b`` or coarser (``daily`` vs ``hourly``:
    True). Unknown names are refused, never ordered by guess."""
    for name in (a, b):
        if name not in GRANULARITY_S:
            raise InvalidConsent(f"unknown granularity {name!r} (known: {_names(GRANULARITY_S)})")
    return GRANULARITY_S[a] >= GRANULARITY_S[b]


@dataclass(frozen=True)
class Vocabulary:
    """The purposes and data categories a consent may name (deny-by-default: nothing else)."""

    purposes: frozenset[str]
    categories: frozenset[str]


DEFAULT_VOCABULARY = Vocabulary(
    purposes=frozenset(
        {
            "personalised_service",
            "energy_efficiency_research",
            "demand_response",
            "grid_operations",
            "billing",
            "marketing",
        }
    ),
    categories=frozenset(
        {"consumption", "generation", "register_reads", "power_quality", "customer_details"}
    ),
)


def _names(known: Mapping[str, object] | frozenset[str]) -> str:
    return ", ".join(sorted(known))
