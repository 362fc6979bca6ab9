"""``broker demo``'s reference path: simulated meters → concentrators → MDMS over mutual TLS.

A fleet of simulated households pushes a week of 15-minute load profiles (DLMS
DataNotifications, general-glo-ciphering, security suite 0). Two data concentrators, each with
its own certificate from the broker's CA, batch and forward the frames they cannot read to the
MDMS over HTTPS with mutual TLS. Along the way the story injects the attacks of X.1332's
metering interface and shows how each ends:

- T2 forged frame (keys guessed) → rejected ``bad_tag``;
- T2 replay (a frame captured on the meter link, withheld, injected after newer ones) →
  rejected ``replay``;
- T3 load profile altered on the meter (authentic frame, intervals lowered, register untouched)
  → accepted, its readings flagged ``unreconciled``;
- C1.6 key rotation in the middle of the stream (global key transfer): frames already on their
  way under the old keys still verify, none is lost.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import select

from broker.api.server import build, running
from broker.api.tls import client_context
from broker.assurance.population import SEED
from broker.ca.authority import Issued
from broker.runtime.core import Runtime
from broker.runtime.wiring import open_ca
from connectors.concentrator import Concentrator, ConcentratorConfig, ConcentratorStatus
from connectors.mdms.keyfile import read_customer_file, read_key_file
from connectors.mdms.models import ReadingDay
from connectors.mdms.readings import read_days
from connectors.mdms.rotation import MDMS_SYSTEM_TITLE, KeyRotator
from connectors.mdms.vee import flag_names
from connectors.meters import attacks
from connectors.meters.files import write_customers, write_keyfile
from connectors.meters.simulator import Fleet, SimulatedMeter
from connectors.meters.state import FleetLink

DAY_S = 86_400
CONCENTRATORS = ("dc-north", "dc-south")
ATTACKER_LINK = "dc-east"
ERASED_CUSTOMER = "CUST-0000010"
DEMO_CUSTOMER = "CUST-0000003"
"""The customer who consents to energy-app, then withdraws (``demo.policy``)."""
"""The customer the demo erases: meter number 9 of the fleet, ``ERASED_METER``."""
ERASED_METER = "58534D000000000A"


@dataclass(frozen=True)
class PathOptions:
    meters: int = 200
    days: int = 7
    push_intervals: int = 4
    rotate: int = 20
    """Meters whose keys are rotated after the next-to-last day."""


@dataclass
class _Attacks:
    replay_target: SimulatedMeter
    tamper_target: SimulatedMeter
    tamper_day: int
    withheld: bytes | None = None
    tampered_ends: tuple[int, int] | None = None


def provision(rt: Runtime, fleet: Fleet, folder: Path, actor: str) -> dict[str, Any]:
    """The utility's side: the vendor's key file and the customer file, imported."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_keyfile(folder / "keys.csv", fleet.meters)
    write_customers(folder / "customers.csv", fleet.meters)
    rows = read_key_file(folder / "keys.csv")
    customers = read_customer_file(folder / "customers.csv")
    with rt.db.transaction() as session:
        report = rt.meters.provision(session, rows, actor, "keys.csv")
        rt.meters.import_customers(session, customers, actor, "customers.csv")
    return {"meters": report["provisioned"], "customers": len(customers)}


def issue_concentrators(rt: Runtime, actor: str) -> dict[str, Issued]:
    ca = open_ca(rt)
    with rt.db.transaction() as session:
        return {
            name: ca.issue(session, rt.audit, role="concentrator", name=name, actor=actor)
            for name in (*CONCENTRATORS, ATTACKER_LINK)
        }


def _pushes(
    fleet: Fleet, day: dt.date, push_intervals: int, plan: _Attacks, day_no: int
) -> Iterator[tuple[SimulatedMeter, bytes]]:
    """One day of every meter's pushes in time order, with the attacks of that day."""
    day_s = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
    per_day = DAY_S // fleet.interval_s
    wh = fleet.energy_wh(day_s, per_day)
    ends = day_s + fleet.interval_s * np.arange(1, per_day + 1, dtype=np.int64)
    for lo in range(0, per_day, push_intervals):
        hi = lo + push_intervals
        for row, meter in enumerate(fleet.meters):
            if meter is plan.tamper_target and day_no == plan.tamper_day and lo <= 72 < hi:
                plan.tampered_ends = (int(ends[lo]), int(ends[hi - 1]))
                yield meter, attacks.tampered_profile(meter, ends[lo:hi], wh[row, lo:hi])
                continue
            frame = meter.push(ends[lo:hi], wh[row, lo:hi])
            if meter is plan.replay_target and day_no == 1 and lo == 0:
                plan.withheld = frame  # captured on the meter link and kept back
                continue
            yield meter, frame


def _concentrator(name: str, who: Issued, ca_pem: Path, port: int, spool: Path) -> Concentrator:
    assert who.key_path is not None
    ctx = client_context(ca_pem, who.cert_path, who.key_path)
    config = ConcentratorConfig(
        spool_dir=spool / name, name=name, max_frames=1000, max_delay_s=0.2, backoff_base_s=0.05
    )
    return Concentrator.over_https(f"https://127.0.0.1:{port}", ctx, config)


def run_path(
    rt: Runtime,
    out: Path,
    issued: dict[str, Issued],
    options: PathOptions,
    actor: str,
    tick: Callable[[int], None],
) -> dict[str, Any]:
    """Stream the fleet's days through the concentrators to the MDMS; attacks on the way."""
    fleet = Fleet.create(options.meters, SEED)
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=options.days)
    facts: dict[str, Any] = {"provisioned": provision(rt, fleet, out / "meters", actor)}
    plan = _Attacks(fleet.meters[3], fleet.meters[5], tamper_day=max(0, options.days - 3))
    ca_pem = rt.settings.ca_dir / "ca.pem"
    with running(build(rt, actor)) as port:
        dcs = {n: _concentrator(n, issued[n], ca_pem, port, out / "spool") for n in issued}
        for dc in dcs.values():
            dc.start()
        try:
            facts.update(_stream(rt, fleet, start, options, plan, dcs, actor, tick))
            facts["attacks"] = _attack(fleet, plan, dcs[ATTACKER_LINK])
        finally:
            for dc in dcs.values():
                dc.stop()
        statuses = {n: dc.status() for n, dc in dcs.items()}
    facts["concentrators"] = {n: _status(s) for n, s in statuses.items()}
    facts["attacks"]["profile_tampered (T3)"] = _tamper_verdict(rt, plan)
    facts["frames"] = _totals(statuses)
    facts["store"] = _store(rt)
    return facts


def _stream(
    rt: Runtime,
    fleet: Fleet,
    start: dt.date,
    options: PathOptions,
    plan: _Attacks,
    dcs: dict[str, Concentrator],
    actor: str,
    tick: Callable[[int], None],
) -> dict[str, Any]:
    sent: Counter[str] = Counter()
    rotated: dict[str, int] = {}
    for day_no in range(options.days):
        day = start + dt.timedelta(days=day_no)
        for meter, frame in _pushes(fleet, day, options.push_intervals, plan, day_no):
            name = CONCENTRATORS[meter.index % len(CONCENTRATORS)]
            dcs[name].submit(frame)
            sent[name] += 1
            tick(1)
        if day_no == options.days - 2 and options.rotate:
            rotated = _rotate(rt, fleet, options.rotate, actor)  # frames still in flight
    for name in CONCENTRATORS:
        dcs[name].flush()
        if not dcs[name].drain(timeout_s=120):
            raise RuntimeError(f"{name} did not deliver everything: {dcs[name].status().alarm}")
    return {"frames_sent": dict(sent), "key_rotation (C1.6)": rotated}


def _rotate(rt: Runtime, fleet: Fleet, count: int, actor: str) -> dict[str, int]:
    rotator = KeyRotator(rt.db, rt.meters, rt.kek, rt.audit, rt.clock, rt.hasher)
    link = FleetLink(fleet, MDMS_SYSTEM_TITLE)
    outcomes: Counter[str] = Counter()
    for meter in fleet.meters[-count:]:
        outcomes[rotator.rotate(meter.system_title.hex().upper(), link, actor).outcome] += 1
    return dict(outcomes)


def _attack(fleet: Fleet, plan: _Attacks, link: Concentrator) -> dict[str, Any]:
    """The attacker's frames, through a concentrator of their own: a forgery and a replay."""
    victim = fleet.meters[8]
    now = int(dt.datetime.now(dt.UTC).timestamp()) // 900 * 900
    ends = now - 900 * np.arange(3, -1, -1, dtype=np.int64)
    link.submit(attacks.forged(victim, ends, [120, 80, 95, 110]))
    assert plan.withheld is not None
    link.submit(plan.withheld)
    link.flush()
    if not link.drain(timeout_s=60):
        raise RuntimeError(f"{ATTACKER_LINK} did not deliver: {link.status().alarm}")
    rejections = dict(link.status().rejections)
    return {
        "forged (T2)": _verdict(rejections, "bad_tag"),
        "replayed (T2)": _verdict(rejections, "replay"),
    }


def _verdict(rejections: dict[str, int], reason: str) -> str:
    return f"rejected: {reason}" if rejections.get(reason) else f"NOT rejected as {reason}"


def _tamper_verdict(rt: Runtime, plan: _Attacks) -> str:
    assert plan.tampered_ends is not None
    first, last = plan.tampered_ends
    meter_id = plan.tamper_target.system_title.hex().upper()
    day = (first - 1) // DAY_S
    with rt.db.transaction() as session:
        (stored,) = read_days(session, rt.data_keys, meter_id, day, day)
    r = stored.readings
    window = (r.end_s >= first) & (r.end_s <= last)
    flagged = int(np.count_nonzero(r.quality[window] & 0x08))
    return f"accepted, {flagged} of {int(window.sum())} readings flagged unreconciled"


def _store(rt: Runtime) -> dict[str, Any]:
    """What the MDMS holds: meter-days sealed, readings, estimates, days carrying each flag."""
    with rt.db.transaction() as session:
        rows = list(
            session.exec(select(ReadingDay.readings, ReadingDay.estimated, ReadingDay.flags))
        )
    flagged: Counter[str] = Counter()
    for _n, _e, flags in rows:
        flagged.update(flag_names(flags))
    return {
        "meter_days_sealed": len(rows),
        "readings": sum(r[0] for r in rows),
        "estimated": sum(r[1] for r in rows),
        "meter_days_flagged": dict(flagged),
    }


def _status(s: ConcentratorStatus) -> dict[str, Any]:
    return {
        "frames": s.frames_submitted,
        "batches": s.batches_delivered,
        "answers": dict(s.answers),
        "rejections": dict(s.rejections),
        "retries": s.retries,
        "alarm": s.alarm,
    }


def _totals(statuses: dict[str, ConcentratorStatus]) -> dict[str, Any]:
    answers: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for s in statuses.values():
        answers.update(s.answers)
        reasons.update(s.rejections)
    return {"answers": dict(answers), "rejected_by_reason": dict(reasons)}
