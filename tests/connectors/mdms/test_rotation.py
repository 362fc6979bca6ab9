"""Meter key rotation by global key transfer against simulated meters (C1.6).

The meter side is ``SimulatedMeter.handle``: it opens the MDMS's request under its current keys,
unwraps the new keys with its master key, answers under the old keys and switches. The links
below stand for the head-end system between the two: one that delivers, one that loses the
answer after the meter acted on the request, one that replays an answer it kept.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from broker.errors import NotFound
from connectors.dlms.frames import FrameRejected
from connectors.mdms.rotation import (
    MDMS_SYSTEM_TITLE,
    KeyRotationError,
    KeyRotator,
    MeterUnreachable,
    Rotation,
)
from connectors.meters.simulator import Fleet, SimulatedMeter
from tests.connectors.mdms.conftest import Mdms
from tests.connectors.mdms.factory import DAY0, key_rows

SEED = 20261101
GRACE_S = 3_600
DAY9 = DAY0 + 9 * 86_400  # the mdms fixture's clock stands at the end of day 9


class Link:
    """Delivers each request to its meter and brings the answer back; a meter that cannot
    open the request answers nothing (``MeterUnreachable``)."""

    def __init__(self, meters: list[SimulatedMeter]) -> None:
        self.meters = {m.system_title.hex().upper(): m for m in meters}
        self.answers: list[bytes] = []

    def exchange(self, meter_id: str, request: bytes) -> bytes:
        try:
            answer = self.meters[meter_id].handle(request, MDMS_SYSTEM_TITLE)
        except FrameRejected as exc:
            raise MeterUnreachable(f"the meter did not answer ({exc.reason})") from exc
        self.answers.append(answer)
        return answer


class LosingLink(Link):
    """The meter gets the request and acts on it; its answer is lost on the way back."""

    def exchange(self, meter_id: str, request: bytes) -> bytes:
        super().exchange(meter_id, request)
        raise MeterUnreachable("answer lost")


class ReplayingLink:
    """A man in the middle: drops the request and answers with one it kept."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []

    def exchange(self, meter_id: str, request: bytes) -> bytes:
        self.requests.append(request)
        return self.answer


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.create(3, SEED)


@pytest.fixture
def rotator(mdms: Mdms) -> KeyRotator:
    return KeyRotator(
        mdms.db, mdms.registry, mdms.provider, mdms.audit, mdms.clock, mdms.hasher, GRACE_S
    )


def provision(mdms: Mdms, meters: list[SimulatedMeter], master: bool = True) -> None:
    with mdms.db.transaction() as session:
        mdms.registry.provision(session, key_rows(meters, master), "test", "test")


def push(meter: SimulatedMeter, hour: int) -> bytes:
    """The meter's push of hour ``hour`` of day 9 (four quarter hours)."""
    ends = DAY9 + 3_600 * hour + 900 * np.arange(1, 5)
    return meter.push(ends, [100 + hour, 120, 90, 80])


def statuses(mdms: Mdms, *frames: bytes) -> list[str]:
    return [a.reason or a.status for a in mdms.ingest(*frames).answers]


def key_rows_of(mdms: Mdms, meter: SimulatedMeter) -> dict[int, tuple[Any, ...]]:
    """version -> (valid_until_us, wrapped encryption key present) of the meter's keys."""
    with mdms.db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT version, valid_until_us, encryption_wrapped IS NOT NULL FROM meter_key "
                "WHERE meter_id = :m ORDER BY version"
            ),
            {"m": meter.system_title.hex().upper()},
        ).all()
    return {r[0]: (r[1], bool(r[2])) for r in rows}


def current_version(mdms: Mdms, meter: SimulatedMeter) -> int:
    with mdms.db.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT key_version FROM meter WHERE meter_id = :m"),
                {"m": meter.system_title.hex().upper()},
            ).scalar_one()
        )


def rotation_audit(mdms: Mdms) -> list[tuple[str, dict[str, Any]]]:
    with mdms.db.engine.connect() as conn:
        bodies = conn.execute(
            text(
                "SELECT body FROM audit_entry WHERE event_type LIKE 'mdms.meter_key_%' ORDER BY seq"
            )
        ).scalars()
        return [(b["type"], b) for b in map(json.loads, bodies)]


def now_us(mdms: Mdms) -> int:
    return int(mdms.clock.now().timestamp() * 1_000_000)


# ---- rotation ------------------------------------------------------------------------------


def test_C1_6_after_a_rotation_frames_under_the_new_keys_are_accepted(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter, other = fleet.meters[0], fleet.meters[1]
    provision(mdms, fleet.meters)
    old = meter.keys
    assert statuses(mdms, push(meter, 0)) == ["accepted"]
    done = rotator.rotate(meter.system_title.hex().upper(), Link(fleet.meters), "test")
    assert (done.outcome, done.from_version, done.to_version) == ("rotated", 1, 2)
    assert meter.keys.encryption_key != old.encryption_key
    assert meter.keys.authentication_key != old.authentication_key
    assert statuses(mdms, push(meter, 1), push(other, 1)) == ["accepted", "accepted"]
    assert current_version(mdms, meter) == 2
    assert key_rows_of(mdms, meter) == {
        1: (now_us(mdms) + GRACE_S * 1_000_000, True),
        2: (None, True),
    }
    stale = dataclasses.replace(meter, keys=old, invocation_counter=meter.invocation_counter)
    forged = push(stale, 2)  # the old keys, used after the rotation by whoever still holds them
    assert statuses(mdms, forged) == ["accepted"]  # inside the grace window: indistinguishable
    mdms.clock.advance(dt.timedelta(seconds=GRACE_S + 1))
    assert statuses(mdms, push(stale, 3)) == ["bad_tag"]
    assert statuses(mdms, push(meter, 4)) == ["accepted"]


def test_C1_6_frames_sealed_before_a_rotation_and_delivered_after_it_are_not_lost(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    """A concentrator spooled three of the meter's pushes (old keys) while the keys changed."""
    meter = fleet.meters[0]
    provision(mdms, fleet.meters)
    spooled = [push(meter, h) for h in range(3)]
    late = push(meter, 3)
    assert rotator.rotate(meter.system_title.hex().upper(), Link([meter]), "test").outcome == (
        "rotated"
    )
    fresh = push(meter, 4)
    assert statuses(mdms, fresh, *spooled) == ["accepted"] * 4
    mdms.clock.advance(dt.timedelta(seconds=GRACE_S - 1))
    assert statuses(mdms, spooled[0]) == ["duplicate"]  # still verifies: a resend
    mdms.clock.advance(dt.timedelta(seconds=2))
    assert statuses(mdms, late) == ["bad_tag"]  # past the grace window: the old keys are gone
    assert statuses(mdms, push(meter, 5)) == ["accepted"]


def test_C1_6_every_rotation_writes_audit_entries(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter = fleet.meters[0]
    provision(mdms, fleet.meters)
    meter_id = meter.system_title.hex().upper()
    outcomes = [
        rotator.rotate(meter_id, Link([meter]), "op").outcome,
        rotator.rotate(meter_id, LosingLink([meter]), "op").outcome,
    ]
    assert outcomes == ["rotated", "no_answer"]
    entries = rotation_audit(mdms)
    assert [(t, b["details"].get("outcome")) for t, b in entries] == [
        ("mdms.meter_key_transfer_sent", None),
        ("mdms.meter_key_rotated", "rotated"),
        ("mdms.meter_key_transfer_sent", None),
        ("mdms.meter_key_rotated", "no_answer"),
    ]
    assert [(b["details"]["from_version"], b["details"]["to_version"]) for _t, b in entries] == [
        (1, 2),
        (1, 2),
        (2, 3),
        (2, 3),
    ]
    assert {b["actor"] for _t, b in entries} == {"op"}
    assert {b["subject"] for _t, b in entries} == {mdms.hasher(meter_id)}
    assert all(meter_id not in json.dumps(b) for _t, b in entries)  # the meter only hashed


def test_C1_6_a_meter_that_refuses_keeps_its_old_keys_and_the_pending_keys_are_destroyed(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter = fleet.meters[0]
    rows = key_rows(fleet.meters)
    rows[0] = dataclasses.replace(rows[0], master_key=os.urandom(16))  # not the meter's
    with mdms.db.transaction() as session:
        mdms.registry.provision(session, rows, "test", "test")
    old = meter.keys
    done = rotator.rotate(rows[0].meter_id, Link([meter]), "test")
    assert (done.outcome, done.detail) == ("refused", "meter answered 250")
    assert meter.keys == old
    assert key_rows_of(mdms, meter) == {1: (None, True), 2: (mdms.clock_us(), False)}
    assert current_version(mdms, meter) == 1
    assert statuses(mdms, push(meter, 0)) == ["accepted"]
    assert rotation_audit(mdms)[-1][1]["details"]["outcome"] == "refused"


def test_C1_6_a_lost_answer_keeps_the_pending_version_and_the_first_frame_under_it_promotes_it(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter = fleet.meters[0]
    meter_id = meter.system_title.hex().upper()
    provision(mdms, fleet.meters)
    spooled = push(meter, 0)  # old keys, delivered late
    done = rotator.rotate(meter_id, LosingLink([meter]), "test")
    assert (done.outcome, done.to_version) == ("no_answer", 2)
    assert key_rows_of(mdms, meter) == {1: (None, True), 2: (None, True)}
    assert current_version(mdms, meter) == 1  # the MDMS cannot know the meter switched
    first_new = push(meter, 1)
    assert statuses(mdms, first_new) == ["accepted"]
    assert current_version(mdms, meter) == 2  # promoted by ingest
    grace = mdms.pipeline.settings.key_grace_s
    assert key_rows_of(mdms, meter)[1] == (now_us(mdms) + grace * 1_000_000, True)
    assert statuses(mdms, spooled, push(meter, 2)) == ["accepted", "accepted"]
    assert statuses(mdms, first_new) == ["duplicate"]
    again = rotator.rotate(meter_id, Link([meter]), "test")  # the next rotation starts from 2
    assert (again.outcome, again.from_version, again.to_version) == ("rotated", 2, 3)
    assert statuses(mdms, push(meter, 3)) == ["accepted"]


def test_C1_6_a_refused_request_after_a_lost_answer_is_not_a_rotation(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    """The meter took the keys, the answer was lost: the next request, sealed under the keys
    the MDMS still believes current, does not open on the meter; no answer, no harm."""
    meter = fleet.meters[0]
    meter_id = meter.system_title.hex().upper()
    provision(mdms, fleet.meters)
    assert rotator.rotate(meter_id, LosingLink([meter]), "test").outcome == "no_answer"
    with pytest.raises(KeyRotationError, match="awaiting confirmation"):
        rotator.rotate(meter_id, Link([meter]), "test")
    assert current_version(mdms, meter) == 1
    assert statuses(mdms, push(meter, 0)) == ["accepted"]  # under version 2, promoted
    assert current_version(mdms, meter) == 2


def test_C1_6_a_meter_provisioned_without_a_master_key_cannot_be_rotated(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter = fleet.meters[0]
    provision(mdms, fleet.meters, master=False)
    before = len(mdms.audit_types())
    link = ReplayingLink(b"")
    with pytest.raises(KeyRotationError, match="no master key on file"):
        rotator.rotate(meter.system_title.hex().upper(), link, "test")
    assert link.requests == []
    assert key_rows_of(mdms, meter) == {1: (None, True)}
    assert len(mdms.audit_types()) == before
    assert statuses(mdms, push(meter, 0)) == ["accepted"]


def test_C1_6_an_unknown_meter_cannot_be_rotated(mdms: Mdms, rotator: KeyRotator) -> None:
    with pytest.raises(NotFound):
        rotator.rotate("58534D0000000999", ReplayingLink(b""), "test")


# ---- answers that are not the meter's answer to this request ---------------------------------


def test_C1_6_an_answer_replayed_from_an_earlier_rotation_is_refused(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter = fleet.meters[0]
    meter_id = meter.system_title.hex().upper()
    provision(mdms, fleet.meters)
    link = Link([meter])
    assert rotator.rotate(meter_id, link, "test").outcome == "rotated"
    kept = link.answers[0]
    replayed = rotator.rotate(meter_id, ReplayingLink(kept), "test")
    assert replayed.outcome != "rotated"
    assert current_version(mdms, meter) == 2
    mdms.clock.advance(dt.timedelta(seconds=2 * GRACE_S))
    assert statuses(mdms, push(meter, 0)) == ["accepted"]  # the keys the meter really has


def test_C1_6_an_answer_replayed_after_a_lost_answer_cannot_rotate(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    """The meter took version 2 and its answer was kept by a man in the middle; when the
    operator retries, he would drop the request and replay the kept answer (still sealed under
    version 1). The retry is refused while version 2 awaits confirmation, so the replay never
    gets a request to answer; the meter's next frame under version 2 confirms it."""
    meter = fleet.meters[0]
    meter_id = meter.system_title.hex().upper()
    provision(mdms, fleet.meters)
    lost = LosingLink([meter])
    assert rotator.rotate(meter_id, lost, "test").outcome == "no_answer"
    replaying = ReplayingLink(lost.answers[0])
    with pytest.raises(KeyRotationError, match="awaiting confirmation"):
        rotator.rotate(meter_id, replaying, "test")
    assert replaying.requests == [] and current_version(mdms, meter) == 1
    mdms.clock.advance(dt.timedelta(days=2))
    assert statuses(mdms, push(meter, 0)) == ["accepted"]
    assert current_version(mdms, meter) == 2


def test_C1_6_a_transfer_that_never_reached_the_meter_can_be_abandoned(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter = fleet.meters[0]
    meter_id = meter.system_title.hex().upper()
    provision(mdms, fleet.meters)
    assert rotator.rotate(meter_id, ReplayingLink(b""), "test").outcome == "no_answer"
    done = rotator.rotate(meter_id, Link([meter]), "test", abandon_pending=True)
    assert done.outcome == "rotated" and done.to_version == 3
    assert "mdms.meter_key_pending_abandoned" in mdms.audit_types()
    assert statuses(mdms, push(meter, 0)) == ["accepted"]
    assert current_version(mdms, meter) == 3


def test_C1_6_an_answer_from_another_meter_or_changed_on_the_way_is_not_a_rotation(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter, other = fleet.meters[0], fleet.meters[1]
    meter_id = meter.system_title.hex().upper()
    provision(mdms, fleet.meters)
    link = Link([other])
    rotator.rotate(other.system_title.hex().upper(), link, "test")
    results: list[Rotation] = [rotator.rotate(meter_id, ReplayingLink(link.answers[0]), "test")]
    changed = bytearray(push(meter, 0))  # a frame of the meter's, one byte changed
    changed[-1] ^= 1
    results.append(
        rotator.rotate(meter_id, ReplayingLink(bytes(changed)), "test", abandon_pending=True)
    )
    assert [(r.outcome, r.detail.split(":")[0]) for r in results] == [
        ("no_answer", "bad answer"),
        ("no_answer", "bad answer"),
    ]
    assert "body_mismatch" in results[0].detail and "bad_tag" in results[1].detail
    assert current_version(mdms, meter) == 1


def test_C1_6_keys_past_their_grace_are_destroyed_at_the_next_rotation(
    mdms: Mdms, rotator: KeyRotator, fleet: Fleet
) -> None:
    meter = fleet.meters[0]
    meter_id = meter.system_title.hex().upper()
    provision(mdms, fleet.meters)
    assert rotator.rotate(meter_id, Link([meter]), "test").outcome == "rotated"
    mdms.clock.advance(dt.timedelta(seconds=GRACE_S + 1))
    assert rotator.rotate(meter_id, Link([meter]), "test").outcome == "rotated"
    rows = key_rows_of(mdms, meter)
    assert [rows[v][1] for v in (1, 2, 3)] == [False, True, True]  # version 1's keys are gone
    assert statuses(mdms, push(meter, 0)) == ["accepted"]
