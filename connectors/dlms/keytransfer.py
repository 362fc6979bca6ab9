"""Global key transfer (C1.6): new meter keys sent to a meter wrapped under its master key.

The MDMS calls method 2 (``global_key_transfer``) of the meter's Security setup object
(class 64, OBIS 0.0.43.0.0.255) with an ACTION-request-normal. The parameter is::

    array of structure { enum key_id, octet-string key_wrapped }

``key_wrapped`` is the new key wrapped under the meter's master key (KEK) with the AES key wrap
of RFC 3394 (DLMS Blue Book 4.4.7, Green Book 9.2.3.4.6). The request travels ciphered like any
other APDU (general-glo-ciphering under the current keys); the meter answers ACTION-response-
normal with result ``success``, after which the new keys are in force. Gurux builds the same
parameter (``GXDLMSSecuritySetup.globalKeyTransfer``); the tests compare the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from connectors.dlms.frames import KEY_LENGTH, FrameRejected, Reason

TAG_ACTION_REQUEST = 0xC3
TAG_ACTION_RESPONSE = 0xC7
ACTION_NORMAL = 0x01
SECURITY_SETUP_CLASS = 64
SECURITY_SETUP_OBIS = bytes((0, 0, 43, 0, 0, 255))
METHOD_GLOBAL_KEY_TRANSFER = 2
WRAPPED_LENGTH = KEY_LENGTH + 8
_DESCRIPTOR = SECURITY_SETUP_CLASS.to_bytes(2, "big") + SECURITY_SETUP_OBIS
# Invoke-Id-And-Priority: bit 7 priority (0 normal), bit 6 service class (1 confirmed), 0-3 id.
_CONFIRMED = 0x40
_SUCCESS = 0


class KeyId(IntEnum):
    """Which key a transfer carries (``key_id`` of the Security setup class)."""

    GLOBAL_UNICAST_ENCRYPTION = 0
    GLOBAL_BROADCAST_ENCRYPTION = 1
    AUTHENTICATION = 2
    MASTER = 3


class KeyTransferError(ValueError):
    """A key transfer could not be built, read or unwrapped."""


def key_data(master_key: bytes, keys: Mapping[KeyId, bytes]) -> bytes:
    """The A-XDR parameter of ``global_key_transfer``: each key wrapped (RFC 3394).

    Raises :class:`KeyTransferError` on a master key or a key that is not 16 bytes, on 0 or
    more than 4 keys and on a key id that is not a :class:`KeyId`."""
    if len(master_key) != KEY_LENGTH:
        raise KeyTransferError(f"master key must be {KEY_LENGTH} bytes")
    if not 1 <= len(keys) <= 4:
        raise KeyTransferError("a transfer carries 1 to 4 keys")
    out = bytearray((0x01, len(keys)))  # array of n
    for key_id, key in keys.items():
        if key_id not in set(KeyId):
            raise KeyTransferError(f"unknown key id {key_id!r}")
        if len(key) != KEY_LENGTH:
            raise KeyTransferError(f"{KeyId(key_id).name} key must be {KEY_LENGTH} bytes")
        wrapped = aes_key_wrap(master_key, key)
        out += bytes((0x02, 0x02, 0x16, int(key_id), 0x09, len(wrapped))) + wrapped
    return bytes(out)


def unwrap_key_data(master_key: bytes, data: bytes) -> dict[KeyId, bytes]:
    """Read and unwrap a ``global_key_transfer`` parameter.

    Raises :class:`KeyTransferError` on a master key that is not 16 bytes, a parameter that is
    not an array of 1 to 4 ``{enum, octet-string(24)}``, an unknown or repeated key id, and a
    key that does not unwrap (RFC 3394 integrity check: a wrong master key or a changed byte)."""
    if len(master_key) != KEY_LENGTH:
        raise KeyTransferError(f"master key must be {KEY_LENGTH} bytes")
    if len(data) < 2 or data[0] != 0x01 or not 1 <= data[1] <= 4:
        raise KeyTransferError("key data is not an array of 1 to 4 entries")
    entry = 6 + WRAPPED_LENGTH
    if len(data) != 2 + data[1] * entry:
        raise KeyTransferError(f"key data of {len(data)} bytes for {data[1]} entries")
    keys: dict[KeyId, bytes] = {}
    for i in range(data[1]):
        at = 2 + i * entry
        head = data[at : at + 6]
        if head[:3] != b"\x02\x02\x16" or head[4:] != bytes((0x09, WRAPPED_LENGTH)):
            raise KeyTransferError(f"entry {i} is not structure {{enum, octet-string(24)}}")
        try:
            key_id = KeyId(head[3])
        except ValueError:
            raise KeyTransferError(f"entry {i} names unknown key id {head[3]}") from None
        if key_id in keys:
            raise KeyTransferError(f"entry {i} repeats key id {key_id.name}")
        try:
            keys[key_id] = aes_key_unwrap(master_key, data[at + 6 : at + entry])
        except InvalidUnwrap:
            raise KeyTransferError(f"{key_id.name} key does not unwrap: wrong master key") from None
    return keys


def action_request(invoke_id: int, parameter: bytes) -> bytes:
    """ACTION-request-normal for ``global_key_transfer`` with ``parameter`` (plain APDU),
    confirmed, normal priority; an invoke id outside 0..15 is a :class:`KeyTransferError`."""
    _check_invoke_id(invoke_id)
    head = bytes((TAG_ACTION_REQUEST, ACTION_NORMAL, _CONFIRMED | invoke_id))
    return head + _DESCRIPTOR + bytes((METHOD_GLOBAL_KEY_TRANSFER, 0x01)) + parameter


def _check_invoke_id(invoke_id: int) -> None:
    if not 0 <= invoke_id <= 0x0F:
        raise KeyTransferError("invoke id is 0 to 15")


def parse_action_request(apdu: bytes) -> tuple[int, bytes]:
    """(invoke id, parameter) of a ``global_key_transfer`` ACTION-request-normal; anything
    else is ``FrameRejected(Reason.MALFORMED)``. The priority bits are not interpreted."""
    if len(apdu) < 14 or apdu[0] != TAG_ACTION_REQUEST or apdu[1] != ACTION_NORMAL:
        raise FrameRejected(Reason.MALFORMED, "not an ACTION-request-normal")
    if apdu[3:11] != _DESCRIPTOR or apdu[11] != METHOD_GLOBAL_KEY_TRANSFER:
        raise FrameRejected(Reason.MALFORMED, "not Security setup method 2 (global_key_transfer)")
    if apdu[12] != 0x01:
        raise FrameRejected(Reason.MALFORMED, "global_key_transfer without its parameter")
    return apdu[2] & 0x0F, apdu[13:]


def action_response(invoke_id: int, result: int = _SUCCESS) -> bytes:
    """ACTION-response-normal: ``result`` 0 is success; no return parameters. An invoke id
    outside 0..15 or a result outside 0..255 is a :class:`KeyTransferError`."""
    _check_invoke_id(invoke_id)
    if not 0 <= result <= 0xFF:
        raise KeyTransferError("action result is one byte")
    return bytes((TAG_ACTION_RESPONSE, ACTION_NORMAL, _CONFIRMED | invoke_id, result, 0))


def parse_action_response(apdu: bytes) -> tuple[int, int]:
    """(invoke id, result) of an ACTION-response-normal; anything else is
    ``FrameRejected(Reason.MALFORMED)``."""
    if len(apdu) < 4 or apdu[0] != TAG_ACTION_RESPONSE or apdu[1] != ACTION_NORMAL:
        raise FrameRejected(Reason.MALFORMED, "not an ACTION-response-normal")
    return apdu[2] & 0x0F, apdu[3]
