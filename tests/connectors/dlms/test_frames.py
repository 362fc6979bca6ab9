"""General-glo-ciphering, security suite 0 (C1.3, C1.5, R1.1, R1.2; threat T2).

The ciphering is checked three ways: against the Green Book's published example, against
dlms-cosem (``dlms_cosem.security`` and its ``GeneralGlobalCipher`` parser) and against AES-GCM
computed here from the definition (IV = system title ‖ invocation counter, AAD = SC ‖ AK, tag
cut to 12 bytes). gurux-dlms is checked in ``test_gurux_interop.py``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from dlms_cosem import security
from dlms_cosem.dlms_data import decode_variable_integer, encode_variable_integer
from dlms_cosem.protocol.xdlms.data_notification import DataNotification, LongInvokeIdAndPriority
from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher
from hypothesis import given
from hypothesis import strategies as st

from connectors.dlms import frames, profile
from connectors.dlms.frames import Ciphered, FrameRejected, Reason
from tests.connectors.dlms.vectors import (
    AUTHENTICATION_KEY,
    ENCRYPTION_KEY,
    FAST,
    GREEN_BOOK_CONTENT,
    GREEN_BOOK_IC,
    GREEN_BOOK_PLAIN,
    SYSTEM_TITLE,
)

SC = bytes((0x30,))


def sealed(apdu: bytes = b"\x0f\x00\x00\x00\x01\x00\x02\x00", ic: int = 1) -> bytes:
    return frames.seal(SYSTEM_TITLE, ic, ENCRYPTION_KEY, AUTHENTICATION_KEY, apdu)


def reason_of(frame: bytes) -> Reason:
    """Why the whole ingest chain (envelope, tag, notification, body) refuses ``frame``."""
    with pytest.raises(FrameRejected) as caught:
        apdu = frames.open_ciphered(
            frames.parse_ciphered(frame), ENCRYPTION_KEY, AUTHENTICATION_KEY
        )
        profile.decode_body(frames.data_notification_body(apdu))
    return caught.value.reason


# --- the published vector and the definition ---------------------------------------------------


def test_C1_3_seal_reproduces_the_green_book_ciphered_initiate_request() -> None:
    frame = frames.seal(
        SYSTEM_TITLE, GREEN_BOOK_IC, ENCRYPTION_KEY, AUTHENTICATION_KEY, GREEN_BOOK_PLAIN
    )
    assert frame == b"\xdb\x08" + SYSTEM_TITLE + b"\x30" + GREEN_BOOK_CONTENT


def test_C1_5_open_recovers_the_green_book_plaintext() -> None:
    c = frames.parse_ciphered(b"\xdb\x08" + SYSTEM_TITLE + b"\x30" + GREEN_BOOK_CONTENT)
    assert (c.system_title, c.security_control, c.invocation_counter) == (
        SYSTEM_TITLE,
        0x30,
        GREEN_BOOK_IC,
    )
    assert frames.open_ciphered(c, ENCRYPTION_KEY, AUTHENTICATION_KEY) == GREEN_BOOK_PLAIN


_keys = st.binary(min_size=16, max_size=16)
_titles = st.binary(min_size=8, max_size=8)
_counters = st.integers(0, 2**32 - 1)


@FAST
@given(_titles, _counters, _keys, _keys, st.binary(max_size=600))
def test_R1_1_R1_2_seal_is_aes_gcm_with_iv_title_counter_and_aad_sc_ak(
    title: bytes, ic: int, ek: bytes, ak: bytes, apdu: bytes
) -> None:
    frame = frames.seal(title, ic, ek, ak, apdu)
    full = AESGCM(ek).encrypt(title + ic.to_bytes(4, "big"), apdu, SC + ak)
    content = SC + ic.to_bytes(4, "big") + full[:-4]  # the 16-byte GCM tag cut to 12
    assert frame == b"\xdb\x08" + title + frames.encode_length(len(content)) + content
    assert frames.open_ciphered(frames.parse_ciphered(frame), ek, ak) == apdu


@FAST
@given(_titles, _counters, _keys, _keys, st.binary(max_size=600))
def test_C1_5_seal_and_open_agree_with_dlms_cosem_security(
    title: bytes, ic: int, ek: bytes, ak: bytes, apdu: bytes
) -> None:
    control = security.SecurityControlField(security_suite=0, authenticated=True, encrypted=True)
    assert control.to_bytes() == SC
    theirs = security.encrypt(control, title, ic, ek, apdu, ak)
    frame = frames.seal(title, ic, ek, ak, apdu)
    ours = frames.parse_ciphered(frame)
    assert ours.payload == theirs
    assert security.decrypt(control, title, ic, ek, ours.payload, ak) == apdu
    parsed = GeneralGlobalCipher.from_bytes(frame)  # dlms-cosem reads our envelope the same
    assert parsed.system_title == ours.system_title
    assert parsed.security_control == control
    assert parsed.invocation_counter == ours.invocation_counter == ic
    assert parsed.ciphered_text == ours.payload


@pytest.mark.parametrize("size", [0, 110, 111, 238, 239, 40_000, 70_000])
def test_content_lengths_in_every_axdr_form_parse_as_dlms_cosem_parses_them(size: int) -> None:
    frame = sealed(bytes(size))
    length = encode_variable_integer(1 + 4 + size + 12)
    assert frame[10 : 10 + len(length)] == length
    c = frames.parse_ciphered(frame)
    assert GeneralGlobalCipher.from_bytes(frame).ciphered_text == c.payload
    assert frames.open_ciphered(c, ENCRYPTION_KEY, AUTHENTICATION_KEY) == bytes(size)


# --- every reason the codec gives ---------------------------------------------------------------


@FAST
@given(st.data())
def test_T2_changed_byte_fails_tag_as_bad_tag(data: st.DataObject) -> None:
    """C1.3: any change to the system title, counter, ciphertext or tag breaks the tag."""
    frame = bytearray(sealed(bytes(data.draw(st.integers(0, 64))), ic=7))
    at = data.draw(st.sampled_from([*range(2, 10), *range(12, len(frame))]))
    frame[at] ^= data.draw(st.integers(1, 255))
    assert reason_of(bytes(frame)) is Reason.BAD_TAG


@FAST
@given(st.data())
def test_T2_every_single_byte_change_is_refused(data: st.DataObject) -> None:
    frame = bytearray(sealed(bytes(data.draw(st.integers(0, 300)))))
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] ^= data.draw(st.integers(1, 255))
    reason_of(bytes(frame))


def test_C1_5_wrong_encryption_key_is_bad_tag() -> None:
    c = frames.parse_ciphered(sealed())
    with pytest.raises(FrameRejected) as caught:
        frames.open_ciphered(c, bytes(16), AUTHENTICATION_KEY)
    assert caught.value.reason is Reason.BAD_TAG


def test_C1_5_wrong_authentication_key_is_bad_tag() -> None:
    c = frames.parse_ciphered(sealed())
    with pytest.raises(FrameRejected) as caught:
        frames.open_ciphered(c, ENCRYPTION_KEY, bytes(16))
    assert caught.value.reason is Reason.BAD_TAG


def test_T2_frame_moved_under_another_meters_title_is_bad_tag() -> None:
    frame = sealed()
    moved = frame[:2] + bytes.fromhex("4D4D4D0000BC614F") + frame[10:]
    assert reason_of(moved) is Reason.BAD_TAG


def test_truncated_frame_is_refused_as_truncated() -> None:
    """Every proper prefix of a frame, short or long form length, is :attr:`Reason.TRUNCATED`."""
    for frame in (sealed(bytes(20)), sealed(bytes(300))):
        for cut in range(1, len(frame)):
            assert reason_of(frame[:cut]) is Reason.TRUNCATED, cut


def test_open_refuses_a_payload_too_short_for_a_tag_as_truncated() -> None:
    with pytest.raises(FrameRejected) as caught:
        frames.open_ciphered(Ciphered(SYSTEM_TITLE, 0x30, 1, bytes(11)), ENCRYPTION_KEY, bytes(16))
    assert caught.value.reason is Reason.TRUNCATED


def test_unprotected_plain_data_notification_is_refused() -> None:
    plain = frames.data_notification(profile.encode_body(SYSTEM_TITLE, [0], [0], [0], [0]))
    assert reason_of(plain) is Reason.UNPROTECTED


@pytest.mark.parametrize("tag", [0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC7, 0xD8])
def test_unprotected_plain_xdlms_apdus_are_refused(tag: int) -> None:
    assert reason_of(bytes((tag,)) + bytes(20)) is Reason.UNPROTECTED


@pytest.mark.parametrize("sc", [0x00, 0x10, 0x20], ids=["none", "auth-only", "enc-only"])
def test_unprotected_security_control_without_authenticated_encryption_is_refused(
    sc: int,
) -> None:
    frame = bytearray(sealed())
    frame[11] = sc
    assert reason_of(bytes(frame)) is Reason.UNPROTECTED


@pytest.mark.parametrize(
    "sc", [0x31, 0x32, 0x3F, 0x70, 0xB0], ids=["suite1", "suite2", "suite15", "bcast", "comp"]
)
def test_wrong_security_suite_is_refused(sc: int) -> None:
    frame = bytearray(sealed())
    frame[11] = sc
    assert reason_of(bytes(frame)) is Reason.WRONG_SUITE


@pytest.mark.parametrize("tag", [0xDC, 0xDD, 0xDF, 0xE0], ids=["ded", "general", "sign", "gbt"])
def test_wrong_security_suite_other_ciphering_apdus_are_refused(tag: int) -> None:
    assert reason_of(bytes((tag,)) + sealed()[1:]) is Reason.WRONG_SUITE


MALFORMED_FRAMES = {
    "empty": b"",
    "unknown APDU tag": b"\x42" + sealed()[1:],
    "7-byte system title": b"\xdb\x07" + sealed()[2:],
    "no system title": b"\xdb\x00" + sealed()[10:],
    "5-byte length form": b"\xdb\x85" + bytes(30),
    "content too short for SC, IC and tag": b"\xdb\x08" + SYSTEM_TITLE + b"\x05\x30" + bytes(4),
    "bytes after the content": sealed() + b"\x00",
}


@pytest.mark.parametrize("frame", MALFORMED_FRAMES.values(), ids=MALFORMED_FRAMES.keys())
def test_malformed_envelope_is_refused_as_malformed(frame: bytes) -> None:
    assert reason_of(frame) is Reason.MALFORMED


def test_malformed_decrypted_apdu_that_is_no_data_notification_is_refused() -> None:
    assert reason_of(sealed(b"\xc4\x01\xc1\x00\x06\x00\x00\x00\x01")) is Reason.MALFORMED


# --- the DataNotification ----------------------------------------------------------------------


def test_data_notification_round_trips_its_body() -> None:
    apdu = frames.data_notification(b"\x02\x00", long_invoke_id=0xC0000005)
    assert apdu == b"\x0f\xc0\x00\x00\x05\x00\x02\x00"
    assert frames.data_notification_body(apdu) == b"\x02\x00"


@pytest.mark.parametrize("invoke_id", [-1, 2**32])
def test_data_notification_refuses_a_long_invoke_id_beyond_32_bits(invoke_id: int) -> None:
    with pytest.raises(ValueError, match="32 bits"):
        frames.data_notification(b"\x02\x00", long_invoke_id=invoke_id)


def test_data_notification_body_skips_the_date_time_as_gurux_and_the_green_book_write_it() -> None:
    stamp = bytes.fromhex("07E80301FF00000000000000")  # 2024-03-01 00:00:00, as gurux writes it
    apdu = b"\x0f\xc0\x00\x00\x03" + b"\x0c" + stamp + b"\x02\x00"
    assert frames.data_notification_body(apdu) == b"\x02\x00"


_bodies = st.binary(max_size=64)
_stamps = st.none() | st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2099, 12, 31),
    timezones=st.just(dt.UTC),
)


@FAST
@given(st.integers(0, 2**24 - 1), st.booleans(), st.booleans(), _stamps, _bodies)
def test_data_notification_body_agrees_with_dlms_cosem(
    invoke_id: int, prioritized: bool, confirmed: bool, stamp: dt.datetime | None, body: bytes
) -> None:
    """dlms-cosem writes its date-time with a presence flag 0x01 instead of a length 0x0C."""
    liip = LongInvokeIdAndPriority(invoke_id, prioritized=prioritized, confirmed=confirmed)
    apdu = DataNotification(long_invoke_id_and_priority=liip, date_time=stamp, body=body).to_bytes()
    assert frames.data_notification_body(apdu) == DataNotification.from_bytes(apdu).body == body


MALFORMED_NOTIFICATIONS = {
    "empty": b"",
    "another APDU": b"\xc4\x01\xc1\x00\x06\x00\x00\x00\x01",
    "cut in the long invoke id": b"\x0f\x00\x00",
    "unknown date-time flag": b"\x0f\x00\x00\x00\x01\x05" + bytes(12),
    "cut in the date-time": b"\x0f\x00\x00\x00\x01\x0c" + bytes(11),
}


@pytest.mark.parametrize(
    "apdu", MALFORMED_NOTIFICATIONS.values(), ids=MALFORMED_NOTIFICATIONS.keys()
)
def test_malformed_data_notification_is_refused(apdu: bytes) -> None:
    with pytest.raises(FrameRejected) as caught:
        frames.data_notification_body(apdu)
    assert caught.value.reason is Reason.MALFORMED


# --- arbitrary input ---------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=120))
def test_arbitrary_bytes_parse_or_are_refused_never_another_exception(frame: bytes) -> None:
    try:
        c = frames.parse_ciphered(frame)
    except FrameRejected:
        return
    assert len(c.system_title) == 8 and len(c.payload) >= 12


@FAST
@given(st.binary(max_size=120))
def test_arbitrary_bytes_after_the_ciphering_tag_parse_or_are_refused(rest: bytes) -> None:
    try:
        frames.parse_ciphered(b"\xdb" + rest)
        frames.parse_ciphered(b"\xdb\x08" + rest)
    except FrameRejected:
        pass


@FAST
@given(st.binary(max_size=80))
def test_arbitrary_decrypted_apdus_give_a_body_or_are_refused(apdu: bytes) -> None:
    try:
        frames.data_notification_body(apdu)
        frames.data_notification_body(b"\x0f" + apdu)
    except FrameRejected:
        pass


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    st.integers(0, 10_000),
)
def test_mutated_plaintexts_sealed_by_a_meter_decode_or_are_refused(
    changes: list[tuple[int, int]], cut: int
) -> None:
    """A meter with valid keys but a bad encoder: whatever it seals ends as a result or a reason."""
    apdu = bytearray(
        frames.data_notification(profile.encode_body(SYSTEM_TITLE, [0], [1], [2], [3]))
    )
    for at, value in changes:
        apdu[at % len(apdu)] = value
    for plain in (bytes(apdu), bytes(apdu[: cut % len(apdu)])):
        try:
            opened = frames.open_ciphered(
                frames.parse_ciphered(sealed(plain)), ENCRYPTION_KEY, AUTHENTICATION_KEY
            )
            assert opened == plain
            profile.decode_body(frames.data_notification_body(opened))
        except FrameRejected as exc:
            assert exc.reason is Reason.MALFORMED  # noqa: PT017 (in a loop: not pytest.raises)


# --- sealing errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "ic", "ek", "ak"),
    [
        (SYSTEM_TITLE[:7], 1, ENCRYPTION_KEY, AUTHENTICATION_KEY),
        (SYSTEM_TITLE, 1, ENCRYPTION_KEY[:15], AUTHENTICATION_KEY),
        (SYSTEM_TITLE, 1, ENCRYPTION_KEY, AUTHENTICATION_KEY + b"\x00"),
        (SYSTEM_TITLE, -1, ENCRYPTION_KEY, AUTHENTICATION_KEY),
        (SYSTEM_TITLE, 2**32, ENCRYPTION_KEY, AUTHENTICATION_KEY),
    ],
    ids=["title", "ek", "ak", "ic-negative", "ic-2^32"],
)
def test_seal_refuses_parameters_outside_suite_0(
    title: bytes, ic: int, ek: bytes, ak: bytes
) -> None:
    with pytest.raises(ValueError, match=r"."):
        frames.seal(title, ic, ek, ak, b"\x00")


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**24, 2**32 - 1])
def test_axdr_length_round_trips_and_agrees_with_dlms_cosem(n: int) -> None:
    encoded = frames.encode_length(n)
    assert encoded == encode_variable_integer(n)
    assert frames.decode_length(encoded + b"\xff", 0) == (n, len(encoded))
    assert decode_variable_integer(encoded)[0] == n
