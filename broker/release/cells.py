"""Canonical cells in the broker: computed once per substation-day, recorded, served to everyone.

An aggregate release (tiers ``aggregated`` and ``dp``) is served from **units**, one per
substation and UTC day (``deidentify.canonical``, ``deidentify.canonical_dp``):

* The first release that needs a unit reads every household of the substation for that day,
  computes its cells (aggregated: at every granularity, with complementary suppression; dp: at
  the asked granularity and ε, on cells decided from the hierarchy, with fresh noise), and
  records them in ``canonical_unit`` in the release's transaction. Every later release, to any
  recipient, for any list of feeders, is served the recorded cells: no caller chooses a member
  set, nothing differs between two recipients to subtract, and there is nothing to average.
* A new aggregated unit is checked against the one release history of every recipient
  (``release_group``): a member set 1 to 14 households away from an earlier overlapping one is
  refused. Units are recorded once, so this guards what was released before units existed.
* A new dp unit charges ε (and δ) to its **cell**, the household-days of the substation-day, in
  one ledger for everyone (``privacy_spend.cell``); a draw the cell cannot pay is refused before
  any noise is drawn or anything is recorded. Serving a recorded unit costs nothing
  (post-processing). The cap is lifetime: a household-day does not age.

An erasure does not change a recorded unit: the unit is an anonymous aggregate, and recomputing
it without the erased household is exactly the difference that would disclose that household.

A recipient is served, for the feeders it lists and the decided granularity, each feeder's rows
and the substation's merged rows of the units those feeders lie in.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.kit.clock import from_us, to_us
from broker.policy.decision import Decision
from broker.privacy.service import BudgetLedger
from broker.release.models import CanonicalUnit, ReleaseGroup
from broker.release.store import ReadingsRepository
from deidentify.aggregate import GROUP, LEVEL, MEMBERS, MERGED, RELEASED, STATUS, WITHHELD, Rules
from deidentify.budget_ad import PRIVACY_UNIT, BudgetRules, BudgetSpend, accountant, charge
from deidentify.canonical import AGGREGATE_GRANULARITIES, canonical_cells
from deidentify.canonical_ad import from_plain, plain_columns
from deidentify.canonical_dp import dp_cells
from deidentify.differencing_ad import MemberSet, PastRelease, check_differencing
from deidentify.dp import DAY_WH, Bounds
from deidentify.errors import BudgetExceeded, InvalidData, InvalidParameter
from deidentify.frames import INTERVAL, START
from deidentify.manifest import ReleaseManifest
from deidentify.noise_ad import AUTO, Calibration, calibrate

UNITS = CanonicalUnit.metadata.tables["canonical_unit"]
GROUPS = ReleaseGroup.metadata.tables["release_group"]
DAY_S = 86_400
LIFETIME = timedelta(days=365 * 200)
"""The cell ledger's window: all of it (a household-day does not age)."""


@dataclass(frozen=True)
class CellSpend:
    """A new draw of a unit's noise, charged to its cell."""

    cell: str
    epsilon: float
    delta: float
    mechanism: str


@dataclass(frozen=True)
class Served:
    frame: pd.DataFrame
    manifest: ReleaseManifest
    members: tuple[MemberSet, ...]
    spends: tuple[CellSpend, ...] = ()


@dataclass(frozen=True)
class CellRequest:
    tier: str
    granularity_s: int
    groups: tuple[str, ...]
    period_from: datetime
    period_to: datetime
    epsilon: float = 1.0
    delta: float = 0.0


@dataclass(frozen=True)
class _Stored:
    key: str
    parent: str
    day: int
    frame: pd.DataFrame
    members: tuple[MemberSet, ...]


class CanonicalCells:
    def __init__(
        self,
        repository: ReadingsRepository,
        budget: BudgetLedger,
        rules: Rules,
        budget_rules: BudgetRules,
        peak_kw: float,
    ) -> None:
        self.repository = repository
        self.budget = budget
        self.rules = rules
        self.budget_rules = budget_rules
        self.peak_kw = peak_kw

    def serve(
        self,
        session: Session,
        decision: Decision,
        request: CellRequest,
        release_id: str,
        at: datetime,
    ) -> Served:
        """The recipient's rows of the units ``request`` touches, computing (and recording, or
        for dp charging) the units no one asked for before."""
        if request.granularity_s not in AGGREGATE_GRANULARITIES:
            raise InvalidParameter("aggregates are released per interval up to daily, not monthly")
        parents = self.repository.parents_of(session, request.groups)
        days = _days(request.period_from, request.period_to)
        if request.tier == "dp":
            return self._dp(session, decision, request, parents, days, release_id, at)
        return self._aggregated(session, decision, request, parents, days, release_id, at)

    # --- aggregated ---------------------------------------------------------------------------

    def _aggregated(
        self, session: Session, decision: Decision, request: CellRequest,
        parents: dict[str, str], days: range, release_id: str, at: datetime,
    ) -> Served:  # fmt: skip
        keys = {(p, d): f"aggregated|{p}|{d}" for p in sorted(set(parents.values())) for d in days}
        stored = _load(session, keys.values())
        missing = [pd_ for pd_, key in keys.items() if key not in stored]
        rows_in = 0
        if missing:
            readings, households = self._read(session, decision, missing)
            rows_in = len(readings)
            made = canonical_cells(readings, households, self.rules, period=_span(missing))
            fresh = [u for u in made.units if (u.parent, u.day) in set(missing)]
            for unit in fresh:
                _no_data(unit.frame, unit.parent, unit.day)
            check_differencing(
                [s for u in fresh for s in u.members], _history(session, missing), None
            )
            for unit in fresh:
                key = keys[(unit.parent, unit.day)]
                stored[key] = _record(session, key, "aggregated", unit.parent, unit.day,
                                      unit.frame, unit.members, release_id, at)  # fmt: skip
        units = [stored[keys[pd_]] for pd_ in keys]
        frame = _pick(units, request, parents)
        manifest = self._aggregated_manifest(frame, rows_in, len(missing), len(units))
        return Served(frame, manifest, _served_members(units, frame))

    def _aggregated_manifest(
        self, frame: pd.DataFrame, rows_in: int, new: int, units: int
    ) -> ReleaseManifest:
        status = frame[STATUS].value_counts()
        released = frame[frame[STATUS] == RELEASED]
        grains = ", ".join(str(g) for g in AGGREGATE_GRANULARITIES)
        return ReleaseManifest(
            tier="aggregated",
            transforms=[
                "canonical cells per (substation, day), whoever asks",
                f"sum(feeder, {int(frame[INTERVAL].iloc[0]) if len(frame) else 0} s)",
                f"threshold(members >= {self.rules.need}, share <= {self.rules.max_share} "
                "per interval)",
                f"merge(feeders below {self.rules.need} households -> substation)",
                f"complementary suppression across {grains} s and merged cells",
                "check_differencing(every recipient, min_difference=15)",
            ],
            rows_in=rows_in,
            rows_out=len(frame),
            suppressed=int(status.get(WITHHELD, 0)),
            merged=int(status.get(MERGED, 0)),
            groups=int(frame[GROUP].nunique()),
            min_group_size=int(released[MEMBERS].min()) if len(released) else None,
            notes=[
                f"{units} substation-day unit(s), {new} computed by this release; every "
                "recipient is served the same recorded cells",
                "withheld cells say why in 'reason'",
            ],
        )

    # --- dp -----------------------------------------------------------------------------------

    def _dp(
        self, session: Session, decision: Decision, request: CellRequest,
        parents: dict[str, str], days: range, release_id: str, at: datetime,
    ) -> Served:  # fmt: skip
        grain = request.granularity_s
        bounds = Bounds.of(DAY_WH, self.peak_kw * grain / 3.6)
        self.budget_rules.check(request.epsilon, request.delta)
        per_day = DAY_S // grain
        cal = calibrate(AUTO, request.epsilon, request.delta, bounds.l1(per_day),
                        bounds.l2(per_day))  # fmt: skip
        variant = f"{grain}|{cal.epsilon:g}|{cal.delta:g}|{cal.mechanism}"
        keys = {
            (p, d): f"dp|{p}|{d}|{variant}" for p in sorted(set(parents.values())) for d in days
        }
        stored = _load(session, keys.values())
        missing = [pd_ for pd_, key in keys.items() if key not in stored]
        left = self._charge(session, [_cell(p, d) for p, d in missing], cal, at)
        spends: list[CellSpend] = []
        clipped = (0.0, 0.0)
        if missing:
            readings, households = self._read(session, decision, missing)
            noisy = dp_cells(readings, households, cal, bounds, self.rules.need,
                             interval=grain, period=_span(missing))  # fmt: skip
            for unit in (u for u in noisy if (u.parent, u.day) in set(missing)):
                _no_data_dp(readings, unit.parent, unit.day)
                key = keys[(unit.parent, unit.day)]
                stored[key] = _record(session, key, "dp", unit.parent, unit.day, unit.frame,
                                      (), release_id, at)  # fmt: skip
                spends.append(CellSpend(_cell(unit.parent, unit.day), cal.epsilon, cal.delta,
                                        cal.mechanism))  # fmt: skip
                clipped = (unit.fraction_clipped, unit.clipping_bias_wh)
        units = [stored[keys[pd_]] for pd_ in keys]
        frame = _pick(units, request, parents)
        manifest = ReleaseManifest(
            tier="dp",
            transforms=[
                "canonical cells per (substation, day), decided from the hierarchy only",
                f"merge(feeders below {self.rules.need} registered households -> substation)",
                f"clip(interval <= {bounds.interval_wh:g} Wh, day <= {bounds.day_wh:g} Wh L1)",
                f"sum(feeder, {grain} s)",
                f"{cal.mechanism}(ε={cal.epsilon:g}, δ={cal.delta:g}, Δ={cal.sensitivity:g} Wh)",
            ],
            rows_in=0,
            rows_out=len(frame),
            suppressed=int((frame[STATUS] == WITHHELD).sum()),
            merged=int((frame[STATUS] == MERGED).sum()),
            groups=int(frame[GROUP].nunique()),
            mechanism=cal.mechanism,
            epsilon=cal.epsilon,
            delta=cal.delta,
            privacy_unit=PRIVACY_UNIT,
            bounds={"day_wh": bounds.day_wh, "interval_wh": bounds.interval_wh},
            fraction_clipped=clipped[0] if missing else None,
            clipping_bias_wh=clipped[1] if missing else None,
            budget_left=left,
            notes=[
                f"{len(units)} substation-day unit(s), {len(missing)} drawn by this release "
                "and charged to their household-days; the others are the recorded noisy values, "
                "served to every recipient unchanged at no cost",
                f"noise scale {cal.scale:.6g} Wh (sd {cal.sd:.6g} Wh) per cell",
            ],
        )
        return Served(frame, manifest, (), tuple(spends))

    def _charge(
        self, session: Session, cells: list[str], cal: Calibration, at: datetime
    ) -> float | None:
        """Refuse, before any noise is drawn, a draw one of ``cells`` cannot pay; the least ε
        left among them after it (None when nothing is drawn)."""
        rules = dataclasses.replace(self.budget_rules, window=LIFETIME)
        left: list[float] = []
        for cell, rows in self.budget.of_cells(session, cells).items():
            spent = [BudgetSpend(cell, r["at"], r["epsilon"], r["delta"]) for r in rows]
            budget = accountant(spent, cell, at, rules)
            remaining = max(0.0, float(budget.remaining()[0]))
            try:
                charge(budget, cal, cell)
            except BudgetExceeded as exc:
                parent, day = cell.rsplit("|", 1)
                raise BudgetExceeded(
                    f"a new draw at ε = {cal.epsilon:g} would exceed the budget of the "
                    f"household-days of {parent} on {_dates([(parent, int(day))])}: "
                    f"ε = {_figure(remaining)} of {rules.epsilon_cap:g} left (every recipient "
                    "draws on the same household-days; the recorded values are free)"
                ) from exc
            left.append(max(0.0, remaining - cal.epsilon))
        return round(min(left), 9) if left else None

    def _read(
        self, session: Session, decision: Decision, missing: list[tuple[str, int]]
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        start, end = _span(missing)
        parents = sorted({p for p, _ in missing})
        readings, households = self.repository.units(session, decision, parents, start, end)
        if readings.empty:
            raise InvalidData(f"no readings of {', '.join(parents)} for {_dates(missing)}")
        return readings, households


def _figure(value: float) -> str:
    """A budget figure as a person reads it: float residue (5.6e-16) is 0."""
    return "0" if abs(value) < 1e-9 else f"{value:.4g}"


def _cell(parent: str, day: int) -> str:
    return f"{parent}|{day}"


def _days(period_from: datetime, period_to: datetime) -> range:
    first = int(period_from.timestamp()) // DAY_S
    last = (int(period_to.timestamp()) - 1) // DAY_S
    return range(first, last + 1)


def _span(units: Sequence[tuple[str, int]]) -> tuple[datetime, datetime]:
    lo, hi = min(d for _, d in units), max(d for _, d in units) + 1
    return datetime.fromtimestamp(lo * DAY_S, UTC), datetime.fromtimestamp(hi * DAY_S, UTC)


def _dates(units: Sequence[tuple[str, int]]) -> str:
    days = sorted({d for _, d in units})
    return ", ".join(datetime.fromtimestamp(d * DAY_S, UTC).date().isoformat() for d in days[:5])


def _no_data(frame: pd.DataFrame, parent: str, day: int) -> None:
    if not int(frame[MEMBERS].fillna(0).sum()):
        raise InvalidData(f"no readings of {parent} for {_dates([(parent, day)])}: nothing to "
                          "release yet")  # fmt: skip


def _no_data_dp(readings: pd.DataFrame, parent: str, day: int) -> None:
    lo = pd.Timestamp(day * DAY_S, unit="s", tz="UTC")
    if not ((readings[START] >= lo) & (readings[START] < lo + pd.Timedelta(days=1))).any():
        raise InvalidData(f"no readings for {_dates([(parent, day)])}: nothing to release yet")


def _load(session: Session, keys: Iterable[str]) -> dict[str, _Stored]:
    rows = session.execute(select(UNITS).where(UNITS.c.unit_key.in_(list(keys))))
    return {row.unit_key: _stored(row) for row in rows}


def _stored(row: Any) -> _Stored:
    start = pd.Timestamp(row.day * DAY_S, unit="s", tz="UTC")
    end = start + pd.Timedelta(days=1)
    members = tuple(
        MemberSet(label, start, end, frozenset(m)) for label, m in json.loads(row.members_json)
    )
    frame = from_plain(json.loads(row.cells_json))
    return _Stored(row.unit_key, row.parent, row.day, frame, members)


def _record(
    session: Session, key: str, tier: str, parent: str, day: int, frame: pd.DataFrame,
    members: Sequence[MemberSet], release_id: str, at: datetime,
) -> _Stored:  # fmt: skip
    """Record a unit; when another process recorded it first, serve theirs (never two)."""
    values = {
        "unit_key": key,
        "tier": tier,
        "parent": parent,
        "day": day,
        "cells_json": json.dumps(plain_columns(frame), separators=(",", ":")),
        "members_json": json.dumps([[m.group, sorted(m.members)] for m in members]),
        "release_id": release_id,
        "created_us": to_us(at),
    }
    try:
        with session.begin_nested():
            session.execute(insert(UNITS).values(**values))
    except IntegrityError:
        return _load(session, [key])[key]
    return _Stored(key, parent, day, frame, tuple(members))


def _pick(units: Sequence[_Stored], request: CellRequest, parents: dict[str, str]) -> pd.DataFrame:
    """The requested feeders' rows at the granularity, and their substations' merged rows."""
    lo = pd.Timestamp(request.period_from).tz_convert(UTC)
    hi = pd.Timestamp(request.period_to).tz_convert(UTC)
    wanted = set(request.groups)
    parts = []
    for unit in units:
        f = unit.frame
        f = f[(f[INTERVAL] == request.granularity_s) & (f[START] >= lo) & (f[START] < hi)]
        mine = f[GROUP].isin(wanted) & (f[LEVEL] != "substation")
        into = unit.parent in set(parents.values()) and bool((mine & (f[STATUS] == MERGED)).any())
        parts.append(f[mine | ((f[LEVEL] == "substation") & into)])
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if frame.empty:
        raise InvalidData(
            f"no cells at {request.granularity_s} s: the readings are coarser than asked"
        )
    return frame.sort_values([START, LEVEL, GROUP], kind="stable").reset_index(drop=True)


def _served_members(units: Sequence[_Stored], frame: pd.DataFrame) -> tuple[MemberSet, ...]:
    labels = set(frame.loc[frame[STATUS] == RELEASED, GROUP])
    return tuple(m for unit in units for m in unit.members if m.group in labels)


def _history(session: Session, units: Sequence[tuple[str, int]]) -> list[PastRelease]:
    """Every recipient's member sets overlapping the days of ``units``."""
    start, end = _span(units)
    rows = session.execute(
        select(GROUPS).where(GROUPS.c.end_us > to_us(start), GROUPS.c.start_us < to_us(end))
    )
    sets: defaultdict[tuple[str, str], list[MemberSet]] = defaultdict(list)
    for row in rows:
        sets[(row.release_id, row.recipient)].append(
            MemberSet(
                row.group_name,
                pd.Timestamp(from_us(row.start_us)),
                pd.Timestamp(from_us(row.end_us)),
                frozenset(json.loads(row.members_json)),
            )
        )
    return [PastRelease(rid, who, tuple(s)) for (rid, who), s in sorted(sets.items())]
