"""Differencing across recipients after an erasure, before and now.

Recipient A receives a feeder's quarter-hour sums, a household of the feeder is erased, and
recipient B asks the same: A - B is that household wherever B's cell holds A's members less
that one. Before, B's aggregate is recomputed without the household and checked against B's own
history only; now B is served the canonical unit recorded for A, and a recomputation without the
household is what the check against every recipient's history refuses.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from broker.assurance.substation import ATTACK_RULES, BASE_S, per_request
from deidentify.aggregate import GROUP, RELEASED, STATUS, MemberSet, PastRelease, check_differencing
from deidentify.canonical import Unit, canonical_cells
from deidentify.errors import DifferencingRefused
from deidentify.frames import ENERGY, FEEDER, INTERVAL, METER, START


def cross_recipient_differencing(
    day: pd.DataFrame, households: pd.DataFrame, unit: Unit
) -> dict[str, Any]:
    """A gets a feeder's quarter-hour sums; a household of it is erased; B asks the same.
    A - B is the household wherever B's cell holds A's members less that one."""
    sizes = households.groupby(FEEDER, observed=True).size()
    feeder = str(sizes.idxmax())  # the feeder released on its own in most quarter-hours
    mine = households[households[FEEDER] == feeder]
    erased = str(mine[METER].iloc[0])
    truth = day[day[METER] == erased].set_index(START)[ENERGY].astype(float)
    rest_hh, rest = mine[mine[METER] != erased], day[day[METER] != erased]

    # before: each request aggregates the households of the feeders it lists, as they are now
    a = per_request(day[day[METER].isin(mine[METER])], mine, BASE_S)
    b = per_request(rest[rest[METER].isin(rest_hh[METER])], rest_hh, BASE_S)
    past = [PastRelease("release-a", "recipient-a", a.members)]
    before = _subtract(a.frame, b.frame, feeder, truth)
    before["differencing_refused"] = _refused(b.members, past, "recipient-b")
    before["member_difference"] = _member_difference(b.members, a.members)

    # now: B is served the unit recorded for A; recomputing it without the household is what
    # the cross-recipient check refuses
    now = _subtract(unit.frame, unit.frame, feeder, truth)
    again = canonical_cells(rest, households[households[METER] != erased], ATTACK_RULES).units[0]
    past = [PastRelease("release-a", "recipient-a", unit.members)]
    now["differencing_refused"] = _refused(again.members, past, None)
    now["member_difference"] = _member_difference(again.members, unit.members)
    return {
        "feeder": feeder,
        "feeder_households": len(mine),
        "erased": erased,
        "interval_s": BASE_S,
        "before": before,
        "now": now,
        "note": "before, B's aggregate is recomputed without the erased household and checked "
        "against B's own history only; now B is served the cells recorded for A, and a "
        "recomputation would be refused against every recipient's history",
    }


def _subtract(a: pd.DataFrame, b: pd.DataFrame, feeder: str, truth: pd.Series) -> dict[str, Any]:
    """A - B over the feeder's quarter-hours released to both, against the erased household."""

    def released(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame[
            (frame[GROUP] == feeder) & (frame[STATUS] == RELEASED) & (frame[INTERVAL] == BASE_S)
        ]
        return rows.set_index(START)

    ra, rb = released(a), released(b)
    both = ra.index.intersection(rb.index)
    diff = ra.loc[both, ENERGY].astype(float) - rb.loc[both, ENERGY].astype(float)
    # B's cell holds A's members less one (the erased household): A - B is that household
    alone = (ra.loc[both, "members"] - rb.loc[both, "members"]).to_numpy() == 1
    error = (diff - truth.reindex(both)).abs()[alone]
    return {
        "cells_released_to_both": len(both),
        "cells_recovered": int(alone.sum()),
        "max_abs_error_wh": float(error.max()) if len(error) else None,
        "household_wh_recovered": float(truth.reindex(both)[alone].sum()),
        "max_abs_a_minus_b_wh": float(diff.abs().max()) if len(diff) else 0.0,
    }


def _refused(members: tuple[MemberSet, ...], history: list[PastRelease], who: str | None) -> bool:
    try:
        check_differencing(members, history, who)
    except DifferencingRefused:
        return True
    return False


def _member_difference(new: tuple[MemberSet, ...], old: tuple[MemberSet, ...]) -> int | None:
    """The fewest members by which an overlapping set of ``new`` differs from one of ``old``."""
    gaps = [len(n.members ^ o.members) for n in new for o in old if n.overlaps(o)]
    return min((g for g in gaps if g), default=None)
