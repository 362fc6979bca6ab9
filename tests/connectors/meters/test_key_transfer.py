"""The meter's side of a global key transfer (C1.6): answer under the old keys, then switch."""

from __future__ import annotations

import os

import pytest

from connectors.dlms import frames, keytransfer
from connectors.dlms.frames import FrameRejected, Reason
from connectors.dlms.keytransfer import KeyId
from connectors.meters.keys import MeterKeys
from connectors.meters.simulator import ACTION_OTHER_REASON, Fleet, SimulatedMeter
from tests.connectors.meters.helpers import (
    MONDAY,
    SEED,
    counter,
    day_s,
    open_profile,
    quarter_hours,
)

MDMS = b"MDM\x00\x00\x00\x00\x01"


def request(
    current: MeterKeys,
    new: dict[KeyId, bytes],
    mdms_counter: int,
    master_key: bytes | None = None,
    invoke_id: int = 3,
) -> bytes:
    """What the MDMS sends: the ACTION-request sealed under the meter's current keys."""
    data = keytransfer.key_data(master_key or current.master_key, new)
    apdu = keytransfer.action_request(invoke_id, data)
    return frames.seal(MDMS, mdms_counter, current.encryption_key, current.authentication_key, apdu)


def new_keys() -> dict[KeyId, bytes]:
    return {KeyId.GLOBAL_UNICAST_ENCRYPTION: os.urandom(16), KeyId.AUTHENTICATION: os.urandom(16)}


def response(frame: bytes, keys: MeterKeys) -> tuple[int, int]:
    ciphered = frames.parse_ciphered(frame)
    apdu = frames.open_ciphered(ciphered, keys.encryption_key, keys.authentication_key)
    return keytransfer.parse_action_response(apdu)


def push(meter: SimulatedMeter, slot: int) -> bytes:
    return meter.push(quarter_hours(day_s(MONDAY) + slot * 3600, 4), [100, 120, 90, 80])


@pytest.fixture
def meter() -> SimulatedMeter:
    return Fleet.create(1, SEED).meters[0]


def test_C1_6_after_a_transfer_new_frames_open_only_under_the_new_keys(
    meter: SimulatedMeter,
) -> None:
    old = meter.keys
    before = push(meter, 0)
    fresh = new_keys()
    answer = meter.handle(request(old, fresh, 1), MDMS)
    after = push(meter, 1)

    assert response(answer, old) == (3, 0)  # answered under the keys the request came under
    assert meter.keys.encryption_key == fresh[KeyId.GLOBAL_UNICAST_ENCRYPTION]
    assert meter.keys.authentication_key == fresh[KeyId.AUTHENTICATION]
    assert meter.keys.master_key == old.master_key
    assert open_profile(after, meter.keys).interval_wh.tolist() == [100, 120, 90, 80]
    with pytest.raises(FrameRejected) as refused:
        open_profile(after, old)
    assert refused.value.reason is Reason.BAD_TAG
    assert open_profile(before, old).interval_wh.tolist() == [100, 120, 90, 80]


def test_C1_6_the_invocation_counter_keeps_running_across_the_key_change(
    meter: SimulatedMeter,
) -> None:
    first = push(meter, 0)
    answer = meter.handle(request(meter.keys, new_keys(), 1), MDMS)
    later = push(meter, 1)
    assert [counter(first), counter(answer), counter(later)] == [1, 2, 3]


def test_T2_a_replayed_key_transfer_request_is_refused(meter: SimulatedMeter) -> None:
    original = meter.keys
    sent = request(original, new_keys(), 5)
    meter.handle(sent, MDMS)
    rotated = meter.keys
    # the same request again, and an older one an attacker recorded, both under the old keys
    for replayed in (sent, request(original, new_keys(), 4)):
        with pytest.raises(FrameRejected) as refused:
            meter.handle(replayed, MDMS)
        assert refused.value.reason is Reason.REPLAY
    assert meter.keys == rotated


def test_a_wrong_master_key_is_answered_with_a_failure_and_the_keys_stay(
    meter: SimulatedMeter,
) -> None:
    old = meter.keys
    answer = meter.handle(request(old, new_keys(), 1, master_key=os.urandom(16)), MDMS)
    assert response(answer, old) == (3, ACTION_OTHER_REASON)
    assert meter.keys == old
    assert open_profile(push(meter, 0), old).interval_wh.tolist() == [100, 120, 90, 80]


def test_T2_a_forged_request_is_refused_and_does_not_use_up_the_counter(
    meter: SimulatedMeter,
) -> None:
    old = meter.keys
    with pytest.raises(FrameRejected) as refused:
        meter.handle(request(MeterKeys.random(), new_keys(), 7, master_key=old.master_key), MDMS)
    assert refused.value.reason is Reason.BAD_TAG
    assert meter.keys == old
    meter.handle(request(old, new_keys(), 7), MDMS)  # the genuine request with that counter
    assert meter.keys != old


def test_a_request_must_come_from_the_named_sender(meter: SimulatedMeter) -> None:
    with pytest.raises(FrameRejected) as refused:
        meter.handle(request(meter.keys, new_keys(), 1), b"OTHER\x00\x00\x01")
    assert refused.value.reason is Reason.MALFORMED


def test_a_new_master_key_unwraps_the_next_transfer(meter: SimulatedMeter) -> None:
    master = os.urandom(16)
    meter.handle(request(meter.keys, {KeyId.MASTER: master}, 1), MDMS)
    assert meter.keys.master_key == master
    current = meter.keys
    fresh = new_keys()
    answer = meter.handle(request(current, fresh, 2, master_key=master), MDMS)
    assert response(answer, current) == (3, 0)
    ek, ak = fresh[KeyId.GLOBAL_UNICAST_ENCRYPTION], fresh[KeyId.AUTHENTICATION]
    assert meter.keys == MeterKeys(ek, ak, master)
