"""Interoperability with gurux-dlms, an implementation that shares nothing with ours (C1.5).

Both ways, with the Blue Book keys: DataNotifications that gurux builds and ciphers
(``GXDLMSNotify``, general-glo-ciphering, AUTHENTICATION_ENCRYPTION, suite 0) decode with our
codec to the readings gurux was given; frames built with ours (``encode_body``,
``data_notification``, ``seal``) decode with gurux's ``GXDLMSNotify.getData`` and with its
``GXDLMSTranslator`` to the same values; and the two ciphers agree byte for byte.

gurux quirks met on the way (gurux-dlms 1.0.203):

* It does not verify the GCM tag of authenticated and encrypted APDUs: its
  ``GXDLMSChippering.decryptAesGcm`` recomputes the stream in *encrypt* mode, so the tag check
  in ``flushFinalBlock`` never runs, and a frame with a changed tag or ciphertext decrypts to
  garbage without an error. gurux therefore cannot judge :attr:`Reason.BAD_TAG`; those tests
  (``test_frames.py``) stand on the Green Book vector, AES-GCM and dlms-cosem instead.
* ``generateDataNotificationMessages`` consumes the body ``GXByteBuffer`` (its position moves
  to the end): a second call with the same buffer sends an empty body. Each frame here gets a
  buffer of its own.
* Its Long-Invoke-Id-And-Priority is 0xC0 | invoke id (high priority, confirmed), although a
  DataNotification is unconfirmed, and the invoke id counts up per message; our
  ``data_notification_body`` does not interpret these bits.
* It writes the day of week of a COSEM date-time as 0xFF (not specified); a GXDateTime made
  from an aware UTC datetime gets deviation 0 whatever the local time zone.
* The notification's own date-time is written as 0x0C and 12 bytes (an A-XDR octet-string
  without its type tag), not with dlms-cosem's presence flag 0x01.
* There is no public encoder for a typed value into a buffer; the bodies are built with
  ``_GXCommon.setData``, which is what ``GXDLMSNotify.addData`` calls.
* It prints "Encryption is applied." and the like to stdout when deciphering (pytest
  captures it); it emits no warnings, so no filter is needed.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from gurux_dlms import (
    GXByteBuffer,
    GXDateTime,
    GXDLMSNotify,
    GXDLMSSettings,
    GXDLMSTranslator,
    GXReplyData,
)
from gurux_dlms.AesGcmParameter import AesGcmParameter
from gurux_dlms.enums import DataType, InterfaceType, Security, TranslatorOutputType
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.GXDLMSChippering import GXDLMSChippering
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects.enums import SecuritySuite
from hypothesis import example, given
from hypothesis import strategies as st

from connectors.dlms import frames, profile
from tests.connectors.dlms.vectors import (
    AUTHENTICATION_KEY,
    ENCRYPTION_KEY,
    GREEN_BOOK_CONTENT,
    GREEN_BOOK_IC,
    GREEN_BOOK_PLAIN,
    PROFILE_OBIS,
    SLOW,
    SYSTEM_TITLE,
    date_time_bytes,
)

Row = tuple[dt.datetime, int, int, int]
U32_MAX = 2**32 - 1


LEAP_EVE = dt.datetime(2024, 2, 28, 22, 0, tzinfo=dt.UTC)


def rows(n: int) -> list[Row]:
    """``n`` 15-minute readings from ``LEAP_EVE``, values reaching 0 and 2^32-1."""
    start, step = LEAP_EVE, dt.timedelta(minutes=15)
    return [
        (start + i * step, i % 256, U32_MAX - i if i % 2 else i, 0 if i % 3 else U32_MAX)
        for i in range(n)
    ]


def gurux_cipher(title: bytes, ic: int) -> GXCiphering:
    cipher = GXCiphering(bytearray(title))
    cipher.security = Security.AUTHENTICATION_ENCRYPTION
    cipher.securitySuite = SecuritySuite.SUITE_0
    cipher.blockCipherKey = bytearray(ENCRYPTION_KEY)
    cipher.authenticationKey = bytearray(AUTHENTICATION_KEY)
    cipher.invocationCounter = ic
    return cipher


def gurux_notify(ic: int = 1) -> GXDLMSNotify:
    notify = GXDLMSNotify(True, 1, 1, InterfaceType.PDU)
    notify.setCipher(gurux_cipher(SYSTEM_TITLE, ic))
    return notify


def gurux_body(readings: list[Row], date_time_type: bool) -> GXByteBuffer:
    """The profile body, every value typed and encoded by gurux."""
    settings = GXDLMSSettings(True, None)
    buf = GXByteBuffer()

    def put(kind: int, value: Any) -> None:
        _GXCommon.setData(settings, buf, kind, value)

    buf.setUInt8(DataType.STRUCTURE)
    _GXCommon.setObjectCount(3, buf)
    put(DataType.OCTET_STRING, bytearray(SYSTEM_TITLE))
    put(DataType.OCTET_STRING, bytearray(PROFILE_OBIS))
    buf.setUInt8(DataType.ARRAY)
    _GXCommon.setObjectCount(len(readings), buf)
    stamp_type = DataType.DATETIME if date_time_type else DataType.OCTET_STRING
    for when, status, register, interval in readings:
        buf.setUInt8(DataType.STRUCTURE)
        _GXCommon.setObjectCount(4, buf)
        put(stamp_type, GXDateTime(when))
        put(DataType.UINT8, status)
        put(DataType.UINT32, register)
        put(DataType.UINT32, interval)
    return buf


def our_readings(frame: bytes) -> tuple[frames.Ciphered, bytes, profile.Profile]:
    """The envelope, the deciphered APDU and the profile, as the MDMS reads a frame."""
    c = frames.parse_ciphered(frame)
    apdu = frames.open_ciphered(c, ENCRYPTION_KEY, AUTHENTICATION_KEY)
    return c, apdu, profile.decode_body(frames.data_notification_body(apdu))


def as_rows(p: profile.Profile) -> list[Row]:
    return [
        (dt.datetime.fromtimestamp(int(t), dt.UTC), int(s), int(r), int(v))
        for t, s, r, v in zip(p.end_s, p.status, p.register_wh, p.interval_wh, strict=True)
    ]


# --- gurux builds, we decode --------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 96, 1440])
@pytest.mark.parametrize("sent_at", [None, dt.datetime(2024, 3, 1, tzinfo=dt.UTC)], ids=["", "dt"])
@pytest.mark.parametrize("date_time_type", [False, True], ids=["octet-string", "type-25"])
def test_C1_5_gurux_data_notifications_decode_to_the_readings_gurux_was_given(
    n: int, sent_at: dt.datetime | None, date_time_type: bool
) -> None:
    given_rows = rows(n)
    notify = gurux_notify(ic=0x01234567)
    (frame,) = notify.generateDataNotificationMessages(
        sent_at, gurux_body(given_rows, date_time_type)
    )
    c, apdu, decoded = our_readings(bytes(frame))
    assert (c.system_title, c.invocation_counter) == (SYSTEM_TITLE, 0x01234567)
    assert apdu[1] & 0xC0 == 0xC0  # gurux: high priority, confirmed
    assert apdu[5] == (0x00 if sent_at is None else 0x0C)  # no date-time, or 0x0C + 12 bytes
    body = frames.data_notification_body(apdu)
    first = frames.decode_length(body, 21)[1]  # the first entry, after the array length
    assert body[first : first + 3] == b"\x02\x04" + (b"\x19" if date_time_type else b"\x09")
    assert decoded.system_title == SYSTEM_TITLE
    assert as_rows(decoded) == given_rows


def test_C1_5_gurux_counts_its_invocation_counter_up_and_we_read_each_frame() -> None:
    notify = gurux_notify(ic=41)
    counters = []
    for i in range(3):
        (frame,) = notify.generateDataNotificationMessages(None, gurux_body(rows(1 + i), False))
        c, _, decoded = our_readings(bytes(frame))
        counters.append(c.invocation_counter)
        assert len(decoded) == 1 + i
    assert counters == [41, 42, 43]


# --- we build, gurux decodes --------------------------------------------------------------------


def our_frame(readings: list[Row], ic: int = 7, invoke_id: int = 0) -> bytes:
    body = profile.encode_body(
        SYSTEM_TITLE,
        [int(r[0].timestamp()) for r in readings],
        [r[1] for r in readings],
        [r[2] for r in readings],
        [r[3] for r in readings],
    )
    apdu = frames.data_notification(body, invoke_id)
    return frames.seal(SYSTEM_TITLE, ic, ENCRYPTION_KEY, AUTHENTICATION_KEY, apdu)


def expected_values(readings: list[Row]) -> list[Any]:
    entries = [[date_time_bytes(r[0]), r[1], r[2], r[3]] for r in readings]
    return [SYSTEM_TITLE, PROFILE_OBIS, entries]


def plain(value: Any) -> Any:
    """gurux's decoded values (bytearrays, GXStructure/GXArray lists) as plain bytes and lists."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize("n", [1, 96, 1440])
def test_C1_5_our_frames_decode_with_gurux_notify_to_the_same_values(n: int) -> None:
    given_rows = rows(n)
    notify = gurux_notify()
    reply = GXReplyData()
    assert notify.getData(GXByteBuffer(our_frame(given_rows, invoke_id=0x00ABCDEF)), reply)
    assert plain(reply.value) == expected_values(given_rows)


def translated(frame: bytes) -> str:
    translator = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)
    translator.comments = True  # gurux deciphers only into a comment
    translator.systemTitle = bytearray(SYSTEM_TITLE)
    translator.blockCipherKey = bytearray(ENCRYPTION_KEY)
    translator.authenticationKey = bytearray(AUTHENTICATION_KEY)
    return str(translator.pduToXml(GXByteBuffer(frame)))


def test_C1_5_our_frames_decode_with_the_gurux_translator_to_the_same_values() -> None:
    given_rows = rows(4)
    frame = our_frame(given_rows, ic=0x01234567)
    xml = translated(frame)
    deciphered = re.search(r"Decrypt data: ([0-9A-F ]+)", xml)
    assert deciphered is not None, xml
    apdu = frames.open_ciphered(frames.parse_ciphered(frame), ENCRYPTION_KEY, AUTHENTICATION_KEY)
    assert bytes.fromhex(deciphered.group(1)) == apdu
    body_xml = xml[xml.index("<NotificationBody>") : xml.index("</NotificationBody>")]
    values = re.findall(r'<(\w+) Value="([0-9A-F]*)"', body_xml)
    title, obis, entries = expected_values(given_rows)
    expected = [("OctetString", title.hex().upper()), ("OctetString", obis.hex().upper())]
    for stamp, status, register, interval in entries:
        expected += [("OctetString", stamp.hex().upper()), ("UInt8", f"{status:02X}")]
        expected += [("UInt32", f"{register:08X}"), ("UInt32", f"{interval:08X}")]
    assert values == expected
    assert f'<SystemTitle Value="{SYSTEM_TITLE.hex().upper()}" />' in xml


# --- the ciphers agree ----------------------------------------------------------------------------


def gurux_seal(title: bytes, ic: int, apdu: bytes) -> bytes:
    p = AesGcmParameter(
        0xDB, bytearray(title), bytearray(ENCRYPTION_KEY), bytearray(AUTHENTICATION_KEY)
    )
    p.security = Security.AUTHENTICATION_ENCRYPTION
    p.securitySuite = SecuritySuite.SUITE_0
    p.invocationCounter = ic
    return bytes(GXDLMSChippering.encryptAesGcm(p, bytearray(apdu)))


def gurux_open(frame: bytes) -> tuple[bytes, int, bytes]:
    settings = GXDLMSSettings(True, None)
    settings.cipher = gurux_cipher(SYSTEM_TITLE, 0)
    p = AesGcmParameter(0, bytearray(), bytearray(ENCRYPTION_KEY), bytearray(AUTHENTICATION_KEY))
    p.settings = settings
    apdu = bytes(GXCiphering.decrypt(settings, p, GXByteBuffer(frame)))
    return bytes(p.systemTitle), p.invocationCounter, apdu


@SLOW
@given(
    st.binary(min_size=8, max_size=8),
    st.integers(0, U32_MAX),
    st.binary(max_size=300),
)
@example(SYSTEM_TITLE, GREEN_BOOK_IC, GREEN_BOOK_PLAIN)
def test_C1_3_seal_is_byte_for_byte_what_gurux_ciphers(title: bytes, ic: int, apdu: bytes) -> None:
    ours = frames.seal(title, ic, ENCRYPTION_KEY, AUTHENTICATION_KEY, apdu)
    assert ours == gurux_seal(title, ic, apdu)
    assert gurux_open(ours) == (title, ic, apdu)


def test_C1_3_gurux_reproduces_the_green_book_vector_as_we_do() -> None:
    frame = gurux_seal(SYSTEM_TITLE, GREEN_BOOK_IC, GREEN_BOOK_PLAIN)
    assert frame == b"\xdb\x08" + SYSTEM_TITLE + b"\x30" + GREEN_BOOK_CONTENT


def test_C1_3_a_day_frame_of_1440_intervals_is_what_gurux_ciphers() -> None:
    """A 40 kB frame: the A-XDR content length takes the 0x82 form on both sides."""
    frame = our_frame(rows(1440))
    assert frame[10] == 0x82
    apdu = frames.open_ciphered(frames.parse_ciphered(frame), ENCRYPTION_KEY, AUTHENTICATION_KEY)
    assert gurux_seal(SYSTEM_TITLE, 7, apdu) == frame
