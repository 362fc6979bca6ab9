"""The release manifest: what was done to a release, so a recipient, the customer and the
regulator can tell what it protects.

Every transform returns one with its frame. Values are JSON-ready (``as_json``) so the broker
can put the manifest in the release's audit entry unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReleaseManifest:
    tier: str
    transforms: list[str] = field(default_factory=list)
    """What was applied, in order: ``pseudonymise(meter_id)``, ``coarsen_time(day)``, ..."""
    rows_in: int = 0
    rows_out: int = 0
    k_reached: int | None = None
    """The smallest equivalence class on the quasi-identifiers (generalised tier)."""
    suppressed: int = 0
    """Rows or cells withheld because a threshold was not met."""
    merged: int = 0
    """Cells merged into their parent group (feeder -> substation) to meet a threshold."""
    groups: int | None = None
    min_group_size: int | None = None
    mechanism: str | None = None
    """``laplace``, ``gaussian_analytic`` or None when no noise was added."""
    epsilon: float | None = None
    delta: float | None = None
    privacy_unit: str | None = None
    bounds: dict[str, float] = field(default_factory=dict)
    """Clipping bounds: ``day_wh`` per household-day (L1), ``interval_wh`` per interval."""
    fraction_clipped: float | None = None
    clipping_bias_wh: float | None = None
    """Energy removed by clipping (apart from noise)."""
    budget_left: float | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
