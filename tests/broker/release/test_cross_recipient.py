"""Aggregates that hold when recipients pool what they receive (X.1332 R4.4, C4.3, C3.3, R3.4),
through the real HTTPS server with client certificates and certificate-bound tokens, on real
MDMS readings:

- after an erasure, a second EMS registration and a third party without any consent are served
  the very cells the first EMS received: subtracting gives back nothing of the erased household;
- the feeders a recipient lists do not decide which cells are merged, so two lists cannot be
  subtracted to isolate a one-household feeder;
- no withheld cell can be derived from the cells released at every granularity (hour minus its
  released quarters, or a merged cell minus a derived part);
- a second EMS registration gets the same noisy values as the first, charged once to the
  household-days: averaging gains nothing and the budget is not doubled;
- a dp cell is never a feeder of fewer than 100 households.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import httpx
import numpy as np
import pandas as pd
from sqlalchemy import text

from broker.recipients.models import Kind
from broker.runtime.wiring import erase_customer
from tests.broker.api.test_limits import bearer
from tests.broker.oauth import conftest as oauth
from tests.broker.release.conftest import DAY0, Broker

AGGREGATE: dict[str, Any] = {"purpose": "grid_operations", "categories": ["consumption"],
                             "granularity": "15min", "scope": "aggregate", "groups": ["F-001"],
                             "period_from": DAY0.isoformat(), "format": "csv"}  # fmt: skip
KEY = ["group", "level", "start", "interval_s"]


@contextmanager
def _as(wired: oauth.Broker, who: oauth.Party, scope: str) -> Iterator[httpx.Client]:
    auth = bearer(wired, who, scope)
    with wired.client(who) as client:
        client.headers.update(auth)
        yield client


def _page(wired: oauth.Broker, who: oauth.Party, feed: dict[str, Any]) -> pd.DataFrame:
    """The first page (DAY0) of a new feed of ``who``'s, as a frame."""
    scope = (
        "ems:read ems:write" if feed["purpose"] == "grid_operations" else "feeds:read feeds:write"
    )
    with _as(wired, who, scope) as client:
        made = client.post("/v1/feeds", json=feed)
        assert made.status_code == 201, made.text
        page = client.get(f"/v1/feeds/{made.json()['feed_id']}/data")
    assert page.status_code == 200, page.text
    frame = pd.read_csv(io.StringIO(page.text))
    return frame.set_index(KEY).sort_index()


def _ems(wired: oauth.Broker, name: str) -> oauth.Party:
    return wired.onboard(name, Kind.ems, ("grid_operations",))


def test_R4_4_after_an_erasure_no_recipient_can_subtract_the_erased_household(
    broker: Broker, wired: oauth.Broker
) -> None:
    first = _ems(wired, "ems-grid")
    before = _page(wired, first, AGGREGATE)
    daily_before = _page(wired, first, AGGREGATE | {"granularity": "daily"})
    erased = broker.fleet.meters[0].customer_ref
    erase_customer(broker.rt, erased, "operator:test", "the customer asked")
    second = _page(wired, _ems(wired, "ems-grid-2"), AGGREGATE)
    research = AGGREGATE | {"purpose": "energy_efficiency_research", "granularity": "daily"}
    uni = wired.onboard("uni", Kind.researcher, ("energy_efficiency_research",))
    stranger = _page(wired, uni, research)  # no consent of anyone: the aggregate-only basis
    released = before["status"] == "released"
    assert released.sum() > 80, "the EMS gets its feeder's quarter-hours"
    difference = (before.loc[released, "energy_wh"] - second.loc[released, "energy_wh"]).abs()
    assert difference.max() == 0, "the erased household's profile would be the difference"
    assert before.equals(second)
    assert daily_before["energy_wh"].equals(stranger["energy_wh"])


def _split_feeder(broker: Broker, layout: dict[str, range]) -> None:
    """Re-draw F-001's households onto feeders of the same substation (the network changed)."""
    with broker.rt.db.transaction() as session:
        for feeder, indices in layout.items():
            for i in indices:
                session.execute(
                    text("UPDATE meter SET feeder = :f WHERE meter_id = :m"),
                    {"f": feeder, "m": broker.fleet.meters[i].system_title.hex().upper()},
                )


def test_R4_4_the_listed_feeders_do_not_choose_the_merged_member_set(
    broker: Broker, wired: oauth.Broker
) -> None:
    """Three small feeders and a one-household feeder under one substation: one recipient lists
    all four, another leaves the one-household feeder out. Merging by the list gave each a
    substation cell, and their difference was that household's profile."""
    _split_feeder(broker, {"F-011": range(40), "F-012": range(40, 80), "F-013": range(80, 109),
                           "F-014": range(109, 110)})  # fmt: skip
    four = _page(wired, _ems(wired, "ems-grid"),
                 AGGREGATE | {"groups": ["F-011", "F-012", "F-013", "F-014"]})  # fmt: skip
    three = _page(wired, _ems(wired, "ems-grid-2"),
                  AGGREGATE | {"groups": ["F-011", "F-012", "F-013"]})  # fmt: skip
    sub = [k for k in four.index if k[1] == "substation"]
    assert len(sub) > 48, "the small feeders are released together in their substation's cell"
    assert [k for k in three.index if k[1] == "substation"] == sub
    assert (four.loc[sub, "energy_wh"] == three.loc[sub, "energy_wh"]).all()
    assert (four.loc[sub, "members"] >= 100).all()
    assert not four["energy_wh"].loc[[k for k in four.index if k[0] == "F-014"]].notna().any()


def _derivable(released: pd.DataFrame, withheld: pd.DataFrame) -> list[Any]:
    """Withheld cells a linear combination of the released ones gives back exactly."""
    blocks: dict[tuple[str, int], int] = {}

    def cells(frame: pd.DataFrame) -> list[list[tuple[str, int]]]:
        out = []
        for key, row in frame.iterrows():
            group, level, start, interval = cast(tuple[str, str, str, int], key)
            feeders = [str(group)] if level == "feeder" else row["feeders"]
            first = int(pd.Timestamp(start).timestamp()) // 900
            out.append([(f, s) for f in feeders for s in range(first, first + interval // 900)])
        return out

    for cell in cells(released) + cells(withheld):
        for block in cell:
            blocks.setdefault(block, len(blocks))

    def vector(cell: list[tuple[str, int]]) -> np.ndarray:
        v = np.zeros(len(blocks))
        v[[blocks[b] for b in cell]] = 1
        return v

    basis = np.array([vector(c) for c in cells(released)]).T
    found = []
    for key, cell in zip(withheld.index, cells(withheld), strict=True):
        coef, *_ = np.linalg.lstsq(basis, vector(cell), rcond=None)
        if np.abs(basis @ coef - vector(cell)).max() < 1e-6:
            found.append(key)
    return found


def test_C4_3_no_withheld_cell_is_derived_from_other_granularities(
    broker: Broker, wired: oauth.Broker
) -> None:
    """Every granularity of F-001 and F-002 (merged into their substation), as one pooling
    attacker holds them: no withheld cell is a combination of released ones."""
    ems = _ems(wired, "ems-grid")
    feed = AGGREGATE | {"groups": ["F-001", "F-002"]}
    pages = [_page(wired, ems, feed | {"granularity": g})
             for g in ("15min", "30min", "hourly", "daily")]  # fmt: skip
    cells = pd.concat(pages)
    merged = cells[cells["status"] == "merged"]
    feeders: dict[Any, list[str]] = {}
    for key, row in merged.iterrows():
        group, _level, start, interval = cast(tuple[str, str, str, int], key)
        feeders.setdefault((row["merged_into"], start, interval), []).append(str(group))
    cells["feeders"] = [
        feeders.get((k[0], k[2], k[3]), []) if k[1] == "substation" else [] for k in cells.index
    ]
    released = cells[cells["status"] == "released"]
    withheld = cells[cells["status"] == "threshold not met"]
    dominated = withheld[withheld["reason"].str.contains("above 15%")]
    assert len(dominated) > 0, "the fleet has quarter-hours one household dominates"
    assert len(released) > 100
    assert _derivable(released, withheld) == []


def test_C3_3_a_second_registration_gets_the_same_noise_and_costs_nothing(
    broker: Broker, wired: oauth.Broker
) -> None:
    dp = AGGREGATE | {"tier": "dp", "granularity": "hourly"}
    first = _page(wired, _ems(wired, "ems-grid"), dp)
    second = _page(wired, _ems(wired, "ems-grid-2"), dp)
    assert first["energy_wh"].notna().sum() == 24
    assert first["energy_wh"].equals(second["energy_wh"]), "averaging two draws halves the error"
    with broker.rt.db.transaction() as session:
        spends = session.execute(text("SELECT recipient, cell, epsilon FROM privacy_spend")).all()
    assert len(spends) == 1 and spends[0].recipient == "ems-grid" and spends[0].epsilon == 1.0
    assert spends[0].cell.endswith(f"|{int(DAY0.timestamp()) // 86400}")


def test_C3_3_dp_never_releases_a_feeder_of_fewer_than_100_households(
    broker: Broker, wired: oauth.Broker
) -> None:
    ems = _ems(wired, "ems-grid")
    for granularity in ("15min", "hourly", "daily"):
        page = _page(wired, ems, AGGREGATE | {"tier": "dp", "granularity": granularity,
                                              "groups": ["F-002"]})  # fmt: skip
        small = page.loc[[k for k in page.index if k[0] == "F-002"]]
        assert len(small) > 0 and small["energy_wh"].isna().all(), granularity
        assert small["reason"].str.contains("fewer than 100 registered households").all()
