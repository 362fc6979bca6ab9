"""Global key transfer (C1.6): Security setup method 2, keys wrapped with RFC 3394.

Checked against RFC 3394's own test vector and against gurux-dlms, whose
``GXDLMSSecuritySetup.globalKeyTransfer`` builds the same ACTION request byte for byte (it wraps
with ``GXDLMSSecureClient.encrypt(kek, key)``, an AES key wrap of its own).

gurux quirk: its unwrap, ``GXDLMSSecureClient.decrypt(kek, data)``, cannot run on Python 3 in
gurux-dlms 1.0.203 (``decryptAes`` computes ``n = len(input_) / 8``, a float, and slices with
it: TypeError), so a gurux meter cannot be the unwrapping side here; the unwrap is proven by the
RFC 3394 vector and as the inverse of a wrap that gurux agrees with.
"""

from __future__ import annotations

import pytest
from gurux_dlms.enums import InterfaceType, Priority
from gurux_dlms.objects import GXDLMSSecuritySetup
from gurux_dlms.objects.enums import GlobalKeyType
from gurux_dlms.secure import GXDLMSSecureClient
from hypothesis import given
from hypothesis import strategies as st

from connectors.dlms import frames, keytransfer
from connectors.dlms.frames import FrameRejected, Reason
from connectors.dlms.keytransfer import KeyId, KeyTransferError
from tests.connectors.dlms.vectors import (
    AUTHENTICATION_KEY,
    ENCRYPTION_KEY,
    FAST,
    MASTER_KEY,
    SYSTEM_TITLE,
)

RFC3394_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
RFC3394_WRAPPED = bytes.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")  # RFC 3394 4.1
NEW_KEYS = {
    KeyId.GLOBAL_UNICAST_ENCRYPTION: bytes(range(0x10, 0x20)),
    KeyId.GLOBAL_BROADCAST_ENCRYPTION: bytes(range(0x20, 0x30)),
    KeyId.AUTHENTICATION: bytes(range(0x30, 0x40)),
    KeyId.MASTER: bytes(range(0x40, 0x50)),
}


def test_C1_6_key_data_wraps_with_the_rfc_3394_test_vector() -> None:
    data = keytransfer.key_data(MASTER_KEY, {KeyId.GLOBAL_UNICAST_ENCRYPTION: RFC3394_KEY})
    assert data == bytes.fromhex("0101" "0202" "1600" "0918") + RFC3394_WRAPPED  # fmt: skip
    assert keytransfer.unwrap_key_data(MASTER_KEY, data) == {
        KeyId.GLOBAL_UNICAST_ENCRYPTION: RFC3394_KEY
    }


def gurux_global_key_transfer(kek: bytes, keys: dict[KeyId, bytes]) -> bytes:
    """The ACTION request gurux's client builds, confirmed with normal priority, invoke id 1."""
    client = GXDLMSSecureClient(True, 16, 1, interfaceType=InterfaceType.PDU)
    client.settings.priority = Priority.NORMAL
    pairs = [(GlobalKeyType(int(k)), bytearray(v)) for k, v in keys.items()]
    (message,) = GXDLMSSecuritySetup().globalKeyTransfer(client, bytearray(kek), pairs)
    return bytes(message)


@pytest.mark.parametrize(
    "key_ids",
    [[KeyId.GLOBAL_UNICAST_ENCRYPTION], [KeyId.AUTHENTICATION, KeyId.MASTER], list(KeyId)],
    ids=["unicast", "auth+master", "all four"],
)
def test_C1_6_key_transfer_request_equals_what_gurux_builds(key_ids: list[KeyId]) -> None:
    keys = {k: NEW_KEYS[k] for k in key_ids}
    ours = keytransfer.action_request(1, keytransfer.key_data(MASTER_KEY, keys))
    assert ours == gurux_global_key_transfer(MASTER_KEY, keys)


_key = st.binary(min_size=16, max_size=16)
_keys = st.dictionaries(st.sampled_from(list(KeyId)), _key, min_size=1, max_size=4)


@FAST
@given(_key, _keys)
def test_C1_6_unwrap_gives_back_the_wrapped_keys(master: bytes, keys: dict[KeyId, bytes]) -> None:
    assert keytransfer.unwrap_key_data(master, keytransfer.key_data(master, keys)) == keys


@FAST
@given(_key, _key, _keys)
def test_C1_6_unwrap_with_a_wrong_master_key_is_refused(
    master: bytes, other: bytes, keys: dict[KeyId, bytes]
) -> None:
    data = keytransfer.key_data(master, keys)
    if other != master:
        with pytest.raises(KeyTransferError, match="wrong master key"):
            keytransfer.unwrap_key_data(other, data)


@FAST
@given(_keys, st.data())
def test_C1_6_a_changed_wrapped_byte_is_refused(
    keys: dict[KeyId, bytes], data: st.DataObject
) -> None:
    wrapped = bytearray(keytransfer.key_data(MASTER_KEY, keys))
    entry = data.draw(st.integers(0, len(keys) - 1))
    wrapped[2 + entry * 30 + 6 + data.draw(st.integers(0, 23))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(KeyTransferError, match="does not unwrap"):
        keytransfer.unwrap_key_data(MASTER_KEY, bytes(wrapped))


ONE = keytransfer.key_data(MASTER_KEY, {KeyId.AUTHENTICATION: RFC3394_KEY})
MALFORMED_KEY_DATA = {
    "empty": b"",
    "not an array": b"\x02" + ONE[1:],
    "array of 0": b"\x01\x00",
    "array of 5": b"\x01\x05" + ONE[2:] * 5,
    "one entry short": ONE[:-1],
    "one entry long": ONE + b"\x00",
    "count says 2, one entry": b"\x01\x02" + ONE[2:],
    "entry not a structure of 2": ONE[:3] + b"\x03" + ONE[4:],
    "key id not an enum": ONE[:4] + b"\x11" + ONE[5:],
    "key not an octet-string": ONE[:6] + b"\x0a" + ONE[7:],
    "unknown key id 4": ONE[:5] + b"\x04" + ONE[6:],
    "the same key id twice": b"\x01\x02" + ONE[2:] * 2,
}


@pytest.mark.parametrize("data", MALFORMED_KEY_DATA.values(), ids=MALFORMED_KEY_DATA.keys())
def test_C1_6_malformed_key_data_is_refused(data: bytes) -> None:
    with pytest.raises(KeyTransferError):
        keytransfer.unwrap_key_data(MASTER_KEY, data)


def test_C1_6_unwrap_refuses_a_master_key_that_is_not_16_bytes() -> None:
    with pytest.raises(KeyTransferError, match="master key"):
        keytransfer.unwrap_key_data(MASTER_KEY[:15], ONE)


@pytest.mark.parametrize(
    ("master", "keys"),
    [
        (MASTER_KEY[:15], {KeyId.MASTER: RFC3394_KEY}),
        (MASTER_KEY, {}),
        (MASTER_KEY, {KeyId.MASTER: RFC3394_KEY[:15]}),
        (MASTER_KEY, {7: RFC3394_KEY}),
    ],
    ids=["short master key", "no keys", "short key", "unknown key id"],
)
def test_C1_6_key_data_refuses_what_a_meter_could_not_take(
    master: bytes, keys: dict[KeyId, bytes]
) -> None:
    with pytest.raises(KeyTransferError):
        keytransfer.key_data(master, keys)


@FAST
@given(st.binary(max_size=140))
def test_arbitrary_key_data_unwraps_or_is_refused(data: bytes) -> None:
    try:
        keytransfer.unwrap_key_data(MASTER_KEY, data)
        keytransfer.unwrap_key_data(MASTER_KEY, ONE[:2] + data)
    except KeyTransferError:
        pass


# --- the ACTION request and response ------------------------------------------------------------


@pytest.mark.parametrize("invoke_id", [0, 1, 15])
def test_action_request_and_response_round_trip(invoke_id: int) -> None:
    request = keytransfer.action_request(invoke_id, ONE)
    assert request[:13] == bytes.fromhex("C301") + bytes((0x40 | invoke_id,)) + bytes.fromhex(
        "0040" "00002B0000FF" "02" "01"
    )  # fmt: skip
    assert keytransfer.parse_action_request(request) == (invoke_id, ONE)
    for result in (0, 3, 250):
        response = keytransfer.action_response(invoke_id, result)
        assert response == bytes((0xC7, 0x01, 0x40 | invoke_id, result, 0x00))
        assert keytransfer.parse_action_response(response) == (invoke_id, result)


@pytest.mark.parametrize("invoke_id", [-1, 16])
def test_action_request_and_response_refuse_an_invoke_id_beyond_4_bits(invoke_id: int) -> None:
    with pytest.raises(KeyTransferError, match="invoke id"):
        keytransfer.action_request(invoke_id, ONE)
    with pytest.raises(KeyTransferError, match="invoke id"):
        keytransfer.action_response(invoke_id)


def test_action_response_refuses_a_result_beyond_one_byte() -> None:
    with pytest.raises(KeyTransferError, match="one byte"):
        keytransfer.action_response(1, 256)


REQUEST = keytransfer.action_request(1, ONE)
MALFORMED_REQUESTS = {
    "empty": b"",
    "short": REQUEST[:13],
    "GET request": b"\xc0" + REQUEST[1:],
    "ACTION-request-next-pblock": REQUEST[:1] + b"\x02" + REQUEST[2:],
    "another class": REQUEST[:3] + b"\x00\x01" + REQUEST[5:],
    "another object": REQUEST[:5] + bytes((0, 0, 43, 0, 1, 255)) + REQUEST[11:],
    "method 3 (key agreement)": REQUEST[:11] + b"\x03" + REQUEST[12:],
    "no parameter": REQUEST[:12] + b"\x00",
}


@pytest.mark.parametrize("apdu", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_malformed_action_request_is_refused(apdu: bytes) -> None:
    with pytest.raises(FrameRejected) as caught:
        keytransfer.parse_action_request(apdu)
    assert caught.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "apdu", [b"", b"\xc7\x01\x41", b"\xc4\x01\x41\x00\x00", b"\xc7\x02\x41\x00\x00"]
)
def test_malformed_action_response_is_refused(apdu: bytes) -> None:
    with pytest.raises(FrameRejected) as caught:
        keytransfer.parse_action_response(apdu)
    assert caught.value.reason is Reason.MALFORMED


@FAST
@given(st.binary(max_size=40))
def test_arbitrary_apdus_parse_as_action_or_are_refused(apdu: bytes) -> None:
    for parse in (keytransfer.parse_action_request, keytransfer.parse_action_response):
        try:
            parse(apdu)
            parse(REQUEST[:12] + apdu)
        except FrameRejected:
            pass


def test_C1_6_a_ciphered_key_transfer_reaches_the_meter_with_its_keys() -> None:
    """The request travels general-glo-ciphered under the current keys, like any APDU."""
    request = keytransfer.action_request(5, keytransfer.key_data(MASTER_KEY, NEW_KEYS))
    frame = frames.seal(SYSTEM_TITLE, 9, ENCRYPTION_KEY, AUTHENTICATION_KEY, request)
    apdu = frames.open_ciphered(frames.parse_ciphered(frame), ENCRYPTION_KEY, AUTHENTICATION_KEY)
    invoke_id, parameter = keytransfer.parse_action_request(apdu)
    assert invoke_id == 5
    assert keytransfer.unwrap_key_data(MASTER_KEY, parameter) == NEW_KEYS
