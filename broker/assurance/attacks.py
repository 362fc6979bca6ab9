"""The report's attacks by recipients who pool what they receive, run and gathered.

On the substation of ``broker.assurance.substation``, each attack against the per-request method
("before") and the canonical cells as the broker serves them ("now"): differencing across
recipients after an erasure (``broker.assurance.differencing``), withheld cells from every
granularity (``broker.assurance.recovery``), averaging two dp registrations
(``broker.assurance.averaging``), and the pseudonymised linkage across a re-key that
``broker.assurance.measures.privacy`` measured (``linkage_after_rekey``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from broker.assurance.averaging import averaging_two_registrations
from broker.assurance.differencing import cross_recipient_differencing
from broker.assurance.recovery import cross_granularity_recovery
from broker.assurance.substation import ATTACK_RULES, substation
from deidentify.canonical import canonical_cells
from deidentify.frames import FEEDER, START


def attacks(seed: int, found: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Recipients pooling what they receive, against the per-request method ("before") and the
    canonical cells ("now"), on the first substation (``ATTACK_FEEDERS``); ``found`` is what
    ``privacy`` measured (its linkage after a re-key is the fourth attack)."""
    households, week = substation(seed)
    first = week[START].min()
    day = week[week[START] < first + pd.Timedelta(days=1)]
    # the unit as the broker records it on the first request that needs it, and serves to all
    unit = canonical_cells(day, households, ATTACK_RULES).units[0]
    progress("attack: differencing across recipients after an erasure")
    differencing = cross_recipient_differencing(day, households, unit)
    progress("attack: withheld cells from every granularity")
    granularity = cross_granularity_recovery(day, households, unit)
    progress("attack: averaging two dp registrations")
    averaging = averaging_two_registrations(week, households, seed)
    sizes = households.groupby(FEEDER, observed=True).size()
    return {
        "setup": {
            "substation": unit.parent,
            "households_per_feeder": {str(f): int(n) for f, n in sizes.items()},
            "day": first.date().isoformat(),
            "rules": f"N >= {ATTACK_RULES.need} households, no member above "
            f"{ATTACK_RULES.max_share:.0%}, in every released interval",
            "before": "per-request aggregate / dp_aggregate: cells computed for each request, "
            "from the feeders it lists, fresh noise for each",
            "now": "canonical cells: one unit per substation-day from all its households at "
            "every granularity, recorded and served unchanged to every recipient; dp noise "
            "drawn once per unit, granularity and ε",
        },
        "cross_recipient_differencing": differencing,
        "cross_granularity_recovery": granularity,
        "averaging_two_registrations": averaging,
        "linkage_after_rekey": linkage_after_rekey(found),
    }


def linkage_after_rekey(found: dict[str, Any]) -> dict[str, Any]:
    """The pseudonymised linkage ``privacy`` measured: the key was rotated between the weeks."""
    pseudo = found["linkage_accuracy"]["pseudonymised"]
    return {
        "households": found["households"],
        "before": {"relinked": pseudo["accuracy"]},
        "now": {"relinked": pseudo["accuracy"]},
        "chance": pseudo["chance"],
        "note": "share of households re-linked by habits across a pseudonym re-key (nearest "
        "neighbour between two weeks): the identifier changes, the time series remains a "
        "fingerprint. Canonical cells govern aggregates, not this tier: it is personal data",
    }
