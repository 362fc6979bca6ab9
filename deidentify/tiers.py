"""One entry point per tier: readings and households in, a release frame and manifest out.

The release pipeline calls ``transform(tier, ...)`` with what the policy decided
(tier, granularity, fields to drop) and the parameters of the purpose. Each tier does what
ARCHITECTURE §3.4 promises, and no less:

- ``raw``: the readings at the decided granularity, fields the decision drops removed.
- ``pseudonymised``: as raw, with the meter (and any customer reference) replaced by keyed
  pseudonyms of the recipient's domain and every other personal field dropped. Still personal
  data: load profiles link households across periods (see ``deidentify.linkage``).
- ``generalised``: no household rows. Days at the coarsest of daily and the decided
  granularity; households grouped by their quasi-identifiers (postcode area, tariff, PV, EV)
  after ``enforce_k_anonymity`` with k >= 15, and each class released as its mean profile with
  its size (k-anonymous microaggregation). Every released record stands for at least k
  households, so linking a household across periods succeeds with probability at most 1/k.
- ``aggregated``: group sums by the network (feeder, merged into the substation when a
  threshold fails) under the regulators' thresholds, per released interval
  (``deidentify.aggregate``), refused when it differs by fewer than 15 members from an
  overlapping earlier release to the same recipient (``params.history``).
- ``dp``: group sums with noise calibrated to one household-day, charged to the recipient's
  rolling budget rebuilt from its ledger rows (``deidentify.dp``); the new row comes back in
  ``Release.spend`` for the caller to store with the release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from deidentify.aggregate import MemberSet, PastRelease, aggregate, check_differencing
from deidentify.dp import DAY_WH, BudgetRules, BudgetSpend, dp_aggregate
from deidentify.errors import InvalidData, InvalidParameter, UnknownTier
from deidentify.frames import (
    CUSTOMER,
    ENERGY,
    FEEDER,
    HAS_EV,
    HAS_PV,
    INTERVAL,
    METER,
    START,
    SUBSTATION,
    TARIFF,
    TIERS,
    require,
    require_readings,
)
from deidentify.generalise import (
    DEFAULT_K,
    POSTCODE_AREA,
    TimeLevel,
    coarsen_location,
    coarsen_time,
    drop_fields,
    enforce_k_anonymity,
)
from deidentify.manifest import ReleaseManifest
from deidentify.pseudonym import PseudonymKey, pseudonymise

GRANULARITY_LEVEL: dict[str, TimeLevel | None] = {
    "15min": None,
    "30min": None,
    "hourly": "hour",
    "daily": "day",
    "monthly": "month",
}
GRANULARITY_S = {"15min": 900, "30min": 1800, "hourly": 3600, "daily": 86400, "monthly": 2592000}
MEMBERS = "households"
GENERALISED_QIS = (POSTCODE_AREA, TARIFF, HAS_PV, HAS_EV)


@dataclass(frozen=True)
class TierParams:
    granularity: str = "daily"
    fields_drop: Sequence[str] = ()
    pseudonym_key: PseudonymKey | None = None
    k: int = DEFAULT_K
    # aggregated and dp: who receives it, grouped how, and what came before
    recipient: str | None = None
    group_by: str = FEEDER
    parent: str | None = SUBSTATION
    residential: bool = True
    history: Sequence[PastRelease] = ()
    # dp only
    at: datetime | None = None
    ledger: Sequence[BudgetSpend] = ()
    epsilon: float = 1.0
    delta: float = 0.0
    interval_wh: float | None = None
    day_wh: float | None = DAY_WH
    budget: BudgetRules = field(default_factory=BudgetRules)


@dataclass(frozen=True)
class Release:
    frame: pd.DataFrame
    manifest: ReleaseManifest
    spend: BudgetSpend | None = None
    """dp: the budget ledger row to store with the release."""
    members: tuple[MemberSet, ...] = ()
    """aggregated: who is in each released group (the next release's differencing check)."""


def transform(
    tier: str, readings: pd.DataFrame, households: pd.DataFrame | None, params: TierParams
) -> Release:
    """The release of ``tier``; refuses an unknown tier or inputs the tier cannot honour."""
    if tier not in TIERS:
        raise UnknownTier(f"unknown tier {tier!r}; known: {', '.join(TIERS)}")
    if params.granularity not in GRANULARITY_S:
        known = ", ".join(GRANULARITY_S)
        raise InvalidParameter(f"unknown granularity {params.granularity!r}; known: {known}")
    require_readings(readings)
    if tier == "raw":
        return _raw(readings, params)
    if tier == "pseudonymised":
        return _pseudonymised(readings, params)
    if households is None:
        raise InvalidParameter(f"the {tier} tier needs the households' attributes")
    if tier == "generalised":
        return _generalised(readings, households, params)
    if params.recipient is None:
        raise InvalidParameter(f"the {tier} tier needs the recipient (differencing, budget)")
    if tier == "aggregated":
        return _aggregated(readings, households, params, params.recipient)
    return _dp(readings, households, params, params.recipient)


def _interval(granularity: str) -> int | None:
    return None if granularity == "15min" else GRANULARITY_S[granularity]


def _aggregated(
    readings: pd.DataFrame, households: pd.DataFrame, params: TierParams, recipient: str
) -> Release:
    if params.granularity == "monthly":
        raise InvalidParameter("aggregates are released per interval up to daily, not monthly")
    result = aggregate(
        readings,
        households,
        group_by=params.group_by,
        parent=params.parent,
        residential=params.residential,
        interval=_interval(params.granularity),
    )
    check_differencing(result.members, params.history, recipient)
    result.manifest.transforms.append("check_differencing(min_difference=15)")
    return Release(result.frame, result.manifest, members=result.members)


def _dp(
    readings: pd.DataFrame, households: pd.DataFrame, params: TierParams, recipient: str
) -> Release:
    if params.at is None:
        raise InvalidParameter("the dp tier needs the release time (budget window)")
    if params.granularity == "monthly":
        raise InvalidParameter("dp sums are released per interval up to daily, not monthly")
    result = dp_aggregate(
        readings,
        households,
        recipient=recipient,
        ledger=params.ledger,
        at=params.at,
        interval_wh=params.interval_wh,
        day_wh=params.day_wh,
        epsilon=params.epsilon,
        delta=params.delta,
        group_by=params.group_by,
        interval=_interval(params.granularity),
        rules=params.budget,
    )
    return Release(result.frame, result.manifest, spend=result.spend)


def at_granularity(readings: pd.DataFrame, granularity: str) -> tuple[pd.DataFrame, list[str]]:
    """Readings summed to ``granularity``; refused when the data is coarser than asked."""
    finest = int(readings[INTERVAL].max()) if len(readings) else 0
    if finest > GRANULARITY_S[granularity]:
        raise InvalidData(
            f"the readings are {finest} s intervals, coarser than the {granularity} asked"
        )
    level = GRANULARITY_LEVEL[granularity]
    if level is None or finest == GRANULARITY_S[granularity]:
        if granularity == "30min" and len(readings) and finest < 1800:
            raise InvalidParameter("30-minute coarsening is not offered; ask hourly or finer data")
        return readings, []
    return coarsen_time(readings, level), [f"coarsen_time({level})"]


def _raw(readings: pd.DataFrame, params: TierParams) -> Release:
    frame, steps = at_granularity(readings, params.granularity)
    frame = drop_fields(frame, params.fields_drop)
    manifest = ReleaseManifest(
        "raw", [*steps, *_dropped(params.fields_drop)], len(readings), len(frame)
    )
    return Release(frame, manifest)


def _pseudonymised(readings: pd.DataFrame, params: TierParams) -> Release:
    if params.pseudonym_key is None:
        raise InvalidParameter("the pseudonymised tier needs the recipient's pseudonym key")
    frame, steps = at_granularity(readings, params.granularity)
    columns = [c for c in (METER, CUSTOMER) if c in frame.columns]
    frame, inner = pseudonymise(frame, columns, key=params.pseudonym_key)
    frame = drop_fields(frame, params.fields_drop)
    manifest = ReleaseManifest(
        "pseudonymised",
        [*steps, *inner.transforms, *_dropped(params.fields_drop)],
        len(readings),
        len(frame),
        notes=[*inner.notes, "pseudonymised data is still personal data"],
    )
    return Release(frame, manifest)


def _generalised(readings: pd.DataFrame, households: pd.DataFrame, params: TierParams) -> Release:
    require(households, (METER, "postcode", TARIFF, HAS_PV, HAS_EV), "households")
    granularity = params.granularity
    if GRANULARITY_S[granularity] < GRANULARITY_S["daily"]:
        granularity = "daily"
    frame, steps = at_granularity(readings, granularity)
    located = coarsen_location(
        households[[METER, "postcode", TARIFF, HAS_PV, HAS_EV, *_sub(households)]], "area"
    )
    located = drop_fields(located, (SUBSTATION,))
    anonymous, report = enforce_k_anonymity(located, GENERALISED_QIS, params.k)
    classes = anonymous[[METER, *GENERALISED_QIS]].astype(dict.fromkeys(GENERALISED_QIS, str))
    joined = frame.merge(classes, on=METER, how="inner")
    if joined.empty:
        raise InvalidData(
            f"no household belongs to a class of at least k = {params.k}: nothing to release"
        )
    grouped = joined.groupby([*GENERALISED_QIS, START], observed=True, sort=True)
    out = grouped.agg(energy_wh=(ENERGY, "mean"), households=(METER, "nunique")).reset_index()
    out[INTERVAL] = (
        GRANULARITY_S[granularity]
        if granularity != "monthly"
        else out[START].dt.days_in_month * 86400
    )
    out = out[[*GENERALISED_QIS, START, INTERVAL, ENERGY, MEMBERS]]
    manifest = ReleaseManifest(
        "generalised",
        [
            *steps,
            "coarsen_location(area)",
            f"enforce_k_anonymity(k={params.k})",
            "microaggregate(class mean per interval)",
            "drop(personal fields)",
        ],
        len(readings),
        len(out),
        k_reached=int(out[MEMBERS].min()) if len(out) else None,
        suppressed=report.suppressed,
        groups=int(grouped.ngroups),
        min_group_size=int(out[MEMBERS].min()) if len(out) else None,
    )
    return Release(out, manifest)


def _sub(households: pd.DataFrame) -> list[str]:
    return [SUBSTATION] if SUBSTATION in households.columns else []


def _dropped(fields: Sequence[str]) -> list[str]:
    return [f"drop({', '.join(fields)})"] if fields else []
