"""A small ``broker.release`` policy, its data and inputs that tell its decisions apart: shaped
like the shipped bundle (the catalogue as data under ``data.broker.catalogue``, beside the
policy's own package), small enough to read in one go."""

from __future__ import annotations

from typing import Any

RELEASE = """package broker.release

default allow := false

allow if {
	purpose := data.broker.catalogue.purposes[input.purpose]
	input.recipient.kind in purpose.recipient_kinds
}

tier := data.broker.catalogue.purposes[input.purpose].tier if allow

retention_days := data.broker.catalogue.purposes[input.purpose].retention_days if allow

reasons contains "unknown_purpose" if not data.broker.catalogue.purposes[input.purpose]

reasons contains "recipient_kind_not_allowed" if {
	purpose := data.broker.catalogue.purposes[input.purpose]
	not input.recipient.kind in purpose.recipient_kinds
}

decision := {"allow": allow, "tier": object.get({"t": tier}, "t", "none"), "reasons": sort(reasons)}
"""

CATALOGUE = {
    "purposes": {
        "personalised_service": {
            "recipient_kinds": ["third-party"],
            "tier": "pseudonymised",
            "retention_days": 90,
        },
        "grid_operations": {"recipient_kinds": ["ems"], "tier": "aggregated", "retention_days": 30},
    }
}
DATA = {"broker": {"catalogue": CATALOGUE}}
EXTRA = "package broker.extra\n\nanswer := 42\n"

INPUTS: list[dict[str, Any]] = [
    {"purpose": "personalised_service", "recipient": {"kind": "third-party"}},
    {"purpose": "personalised_service", "recipient": {"kind": "ems"}},
    {"purpose": "grid_operations", "recipient": {"kind": "ems"}},
    {"purpose": "marketing", "recipient": {"kind": "third-party"}},
    {"purpose": "grid_operations"},
    {},
]
ALLOWED = {"allow": True, "tier": "pseudonymised", "reasons": []}
