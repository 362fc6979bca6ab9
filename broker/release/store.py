"""The consent-scoped readings repository: the only way the release pipeline reads readings.

Every read takes the ``Decision`` that allowed it and refuses a denied one, so no code path
reaches a household's readings before the policy allowed the release (X.1332 R3.4, R3.5):

- ``household``: the meters of the one customer the request names, for the period; nothing of
  any other customer.
- ``aggregate``: every meter of the requested groups (feeders), for the period, for the
  aggregated and dp tiers only. Meter ids are replaced by keyed hashes (``hs1:...``) before the
  frames leave the repository: an aggregate transform never sees a meter id, and the member
  sets it returns for the differencing check are already in the form they are stored in.

Frames have the columns of ``deidentify.frames``. Readings: ``meter_id, customer_ref, start,
interval_s, energy_wh`` (the interval value the MDMS stored, in Wh; a reading belongs to the
period when its interval starts in it). Households: ``meter_id, customer_ref, postcode,
feeder, substation, tariff, has_pv, has_ev``. The MDMS stores no substation: it is derived from
the meter's postcode district (``SUB-<district>``), as the reference network lays out feeders
(three feeders a district, one substation a district; ``broker.assurance.population``). The MDMS
stores neither tariff nor PV nor EV: those columns hold the suppressed value ``*``.

A block whose customer was erased (data key destroyed) is skipped in aggregates (that
household's data no longer exists) and refused for a household release.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
from sqlmodel import Session, col, select

from broker.keys.service import DataKeys, KeyDestroyed
from broker.kit.ids import SubjectHasher
from broker.policy.decision import Decision
from broker.release.errors import NotAllowed
from connectors.mdms.models import Meter
from connectors.mdms.readings import read_days
from deidentify import frames as F
from deidentify.generalise import SUPPRESSED

DAY_S = 86_400
AGGREGATE_TIERS = frozenset({"aggregated", "dp"})


def substation_of(postcode: str) -> str:
    """The substation of a meter, derived from its postcode district (see the module text)."""
    district = postcode.strip().split(" ")[0].upper() if postcode.strip() else SUPPRESSED
    return f"SUB-{district}"


def _days(period_from: datetime, period_to: datetime) -> tuple[int, int]:
    first = int(period_from.timestamp()) // DAY_S
    last = (int(period_to.timestamp()) - 1) // DAY_S
    return first, last


def _require_allowed(decision: Decision) -> str:
    if not decision.allow or decision.tier is None:
        raise NotAllowed(
            f"decision {decision.decision_id} does not allow this release: no readings are read"
        )
    return decision.tier


class ReadingsRepository:
    def __init__(self, data_keys: DataKeys, hasher: SubjectHasher) -> None:
        self._keys = data_keys
        self._hasher = hasher

    def household(
        self,
        session: Session,
        decision: Decision,
        customer_ref: str,
        period_from: datetime,
        period_to: datetime,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(readings, households) of ``customer_ref``'s meters, after an allowing decision."""
        tier = _require_allowed(decision)
        if tier in AGGREGATE_TIERS:
            raise NotAllowed(f"a {tier} release is not a household's data")
        meters = list(session.exec(select(Meter).where(Meter.customer_ref == customer_ref)))
        return self._frames(session, meters, period_from, period_to, hashed=False, skip=False)

    def aggregate(
        self,
        session: Session,
        decision: Decision,
        groups: Sequence[str],
        period_from: datetime,
        period_to: datetime,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(readings, households) of every meter of the feeders ``groups``, meter ids as keyed
        hashes, after a decision that allowed an aggregated or dp release."""
        tier = _require_allowed(decision)
        if tier not in AGGREGATE_TIERS:
            raise NotAllowed(f"group readings are read only for aggregates, not the {tier} tier")
        if not groups:
            raise NotAllowed("an aggregate release names the groups (feeders) it covers")
        query = select(Meter).where(col(Meter.feeder).in_(sorted(set(groups))))
        meters = list(session.exec(query.order_by(col(Meter.meter_id))))
        return self._frames(session, meters, period_from, period_to, hashed=True, skip=True)

    def parents_of(self, session: Session, feeders: Sequence[str]) -> dict[str, str]:
        """The substation of each of ``feeders`` that has meters (a feeder without meters has
        no cells); refused when none has."""
        rows = session.exec(
            select(Meter.feeder, Meter.postcode).where(col(Meter.feeder).in_(sorted(set(feeders))))
        )
        found = {feeder: substation_of(postcode) for feeder, postcode in rows}
        if not found:
            named = ", ".join(sorted(set(feeders))[:5])
            raise NotAllowed(f"no meter lies on feeder(s) {named}: nothing to aggregate")
        return found

    def units(
        self,
        session: Session,
        decision: Decision,
        parents: Sequence[str],
        period_from: datetime,
        period_to: datetime,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(readings, households) of every meter under the substations ``parents``, meter ids as
        keyed hashes, for canonical cells (which depend on all of a substation's households),
        after a decision that allowed an aggregated or dp release."""
        tier = _require_allowed(decision)
        if tier not in AGGREGATE_TIERS:
            raise NotAllowed(f"group readings are read only for aggregates, not the {tier} tier")
        wanted = set(parents)
        pairs = session.exec(select(Meter.feeder, Meter.postcode).distinct())
        feeders = sorted({f for f, postcode in pairs if substation_of(postcode) in wanted})
        query = select(Meter).where(col(Meter.feeder).in_(feeders))
        meters = [
            m
            for m in session.exec(query.order_by(col(Meter.meter_id)))
            if substation_of(m.postcode) in wanted
        ]
        return self._frames(session, meters, period_from, period_to, hashed=True, skip=True)

    def _frames(
        self,
        session: Session,
        meters: list[Meter],
        period_from: datetime,
        period_to: datetime,
        *,
        hashed: bool,
        skip: bool,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        first, last = _days(period_from, period_to)
        lo, hi = int(period_from.timestamp()), int(period_to.timestamp())
        ids: list[str] = []
        customers: list[str] = []
        starts: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for meter in meters:
            try:
                days = read_days(session, self._keys, meter.meter_id, first, last)
            except KeyDestroyed:
                if skip:
                    continue
                raise
            name = self._hasher(meter.meter_id) if hashed else meter.meter_id
            for day in days:
                start = day.readings.end_s - day.interval_s
                keep = (start >= lo) & (start < hi)
                n = int(keep.sum())
                ids.extend([name] * n)
                customers.extend([meter.customer_ref] * n)
                starts.append(start[keep])
                lengths.append(np.full(n, day.interval_s, dtype=np.int64))
                values.append(day.readings.value[keep].astype(np.float64))
        readings = pd.DataFrame(
            {
                F.METER: pd.Series(ids, dtype=object),
                F.START: pd.to_datetime(_cat(starts, np.int64), unit="s", utc=True),
                F.INTERVAL: _cat(lengths, np.int64),
                F.ENERGY: _cat(values, np.float64),
            }
        )
        if not hashed:
            readings.insert(1, F.CUSTOMER, pd.Series(customers, dtype=object))
        households = pd.DataFrame(
            {
                F.METER: [self._hasher(m.meter_id) if hashed else m.meter_id for m in meters],
                F.CUSTOMER: [None if hashed else m.customer_ref for m in meters],
                F.POSTCODE: [m.postcode for m in meters],
                F.FEEDER: [m.feeder for m in meters],
                F.SUBSTATION: [substation_of(m.postcode) for m in meters],
                F.TARIFF: SUPPRESSED,
                F.HAS_PV: SUPPRESSED,
                F.HAS_EV: SUPPRESSED,
            }
        )
        if hashed:
            households = households.drop(columns=[F.CUSTOMER])
        return readings, households


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)
