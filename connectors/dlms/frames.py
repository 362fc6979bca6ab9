"""General-glo-ciphering of DLMS/COSEM APDUs with security suite 0 (C1.3, C1.5, R1.1, R1.2).

Security suite 0 is AES-GCM-128 with a 12-byte tag; the IV is the sender's system title (8
bytes) followed by its invocation counter (4 bytes, big-endian); with authentication and
encryption (security control 0x30) the associated data is the security control byte followed
by the authentication key (DLMS Green Book, 9.2.7.2.4). The frame is::

    DB | 08 system-title | len | SC | IC(4) | ciphertext | tag(12)

``len`` is an A-XDR length (one byte below 128, else 0x81/0x82/0x83/0x84 and the length).

Why our own code and not ``dlms_cosem.protocol.xdlms.GeneralGlobalCipher``: its ``to_bytes``
writes the length as one byte, so it cannot build a frame of more than 255 bytes (a day of
15-minute intervals is about 2.7 kB), and it builds a new ``Cipher`` object per call through a
generic path. The parsing here is checked against ``dlms_cosem`` in the tests for every frame
shape it can handle, and the ciphering against ``dlms_cosem.security`` and ``gurux-dlms``.

Every failure is a :class:`FrameRejected` carrying a :class:`Reason`, the code the MDMS counts,
answers and audits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TAG_GENERAL_GLO_CIPHERING = 0xDB
TAG_DATA_NOTIFICATION = 0x0F
SECURITY_SUITE_0 = 0
SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_AUTH_ENC = SC_AUTHENTICATED | SC_ENCRYPTED
SC_SUITE0_AUTH_ENC = SC_AUTH_ENC | SECURITY_SUITE_0
TAG_LENGTH = 12
SYSTEM_TITLE_LENGTH = 8
KEY_LENGTH = 16
MAX_INVOCATION_COUNTER = 0xFFFFFFFF

# APDU tags of the other ciphered and unciphered xDLMS services a meter might send instead.
_PLAIN_TAGS = frozenset({0x0F, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC7, 0xD8})
_OTHER_CIPHERING_TAGS = frozenset({0xDC, 0xDD, 0xDF, 0xE0})


class Reason(StrEnum):
    """Why the MDMS refused a frame; the same codes in answers, metrics and the audit log."""

    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    UNPROTECTED = "unprotected"
    WRONG_SUITE = "wrong_suite"
    UNKNOWN_METER = "unknown_meter"
    BAD_TAG = "bad_tag"
    REPLAY = "replay"
    BODY_MISMATCH = "body_mismatch"
    CLOCK_PAST = "clock_past"
    CLOCK_FUTURE = "clock_future"


class FrameRejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def encode_length(n: int) -> bytes:
    """A-XDR length: one byte below 128, else 0x80 | number of length bytes, then the length."""
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def decode_length(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(length, position after it); raises IndexError or ValueError on a bad encoding."""
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0 or size > 4:
        raise ValueError(f"A-XDR length of {size} bytes")
    end = pos + 1 + size
    if end > len(buf):
        raise IndexError("length runs past the end")
    return int.from_bytes(buf[pos + 1 : end], "big"), end


@dataclass(frozen=True, slots=True)
class Ciphered:
    """The parsed (still encrypted) general-glo-ciphering APDU."""

    system_title: bytes
    security_control: int
    invocation_counter: int
    payload: bytes  # ciphertext followed by the 12-byte tag


def parse_ciphered(frame: bytes) -> Ciphered:
    """Parse the envelope without keys: what the concentrator could see, and nothing more."""
    if not frame:
        raise FrameRejected(Reason.MALFORMED, "empty frame")
    tag = frame[0]
    if tag != TAG_GENERAL_GLO_CIPHERING:
        if tag in _PLAIN_TAGS:
            raise FrameRejected(Reason.UNPROTECTED, f"plain APDU (tag 0x{tag:02X}) refused")
        if tag in _OTHER_CIPHERING_TAGS:
            raise FrameRejected(
                Reason.WRONG_SUITE, f"ciphering APDU 0x{tag:02X}: only general-glo-ciphering"
            )
        raise FrameRejected(Reason.MALFORMED, f"unknown APDU tag 0x{tag:02X}")
    try:
        st_len, pos = decode_length(frame, 1)
        if st_len != SYSTEM_TITLE_LENGTH:
            raise FrameRejected(
                Reason.MALFORMED, f"system title of {st_len} bytes, expected {SYSTEM_TITLE_LENGTH}"
            )
        system_title = frame[pos : pos + st_len]
        pos += st_len
        if len(system_title) != SYSTEM_TITLE_LENGTH:
            raise FrameRejected(Reason.TRUNCATED, "frame ends inside the system title")
        content_len, pos = decode_length(frame, pos)
    except IndexError as exc:
        raise FrameRejected(Reason.TRUNCATED, f"header cut short: {exc}") from None
    except ValueError as exc:
        raise FrameRejected(Reason.MALFORMED, f"bad A-XDR length: {exc}") from None
    available = len(frame) - pos
    if available < content_len:
        raise FrameRejected(
            Reason.TRUNCATED, f"content announces {content_len} bytes, {available} present"
        )
    if available > content_len:
        raise FrameRejected(
            Reason.MALFORMED, f"{available - content_len} bytes after the announced content"
        )
    if content_len < 1 + 4 + TAG_LENGTH:
        raise FrameRejected(
            Reason.MALFORMED, f"content of {content_len} bytes cannot hold SC, IC and a tag"
        )
    sc = frame[pos]
    _check_security_control(sc)
    ic = int.from_bytes(frame[pos + 1 : pos + 5], "big")
    return Ciphered(system_title, sc, ic, frame[pos + 5 :])


def _check_security_control(sc: int) -> None:
    """Only 0x30 is accepted: suite 0, authenticated and encrypted, unicast key, uncompressed."""
    if sc & 0x0F != SECURITY_SUITE_0:
        raise FrameRejected(Reason.WRONG_SUITE, f"security suite {sc & 0x0F}, expected 0")
    if sc & SC_AUTH_ENC != SC_AUTH_ENC:
        raise FrameRejected(
            Reason.UNPROTECTED,
            f"security control 0x{sc:02X}: authenticated encryption (0x30) is required",
        )
    if sc != SC_SUITE0_AUTH_ENC:
        raise FrameRejected(
            Reason.WRONG_SUITE,
            f"security control 0x{sc:02X}: broadcast key (0x40) and compression (0x80) unsupported",
        )


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    return system_title + invocation_counter.to_bytes(4, "big")


def seal(
    system_title: bytes,
    invocation_counter: int,
    encryption_key: bytes,
    authentication_key: bytes,
    apdu: bytes,
) -> bytes:
    """Wrap ``apdu`` in general-glo-ciphering, authenticated and encrypted, suite 0."""
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise ValueError(f"system title must be {SYSTEM_TITLE_LENGTH} bytes")
    if len(encryption_key) != KEY_LENGTH or len(authentication_key) != KEY_LENGTH:
        raise ValueError("security suite 0 keys are 16 bytes")
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise ValueError("invocation counter out of range")
    sc = bytes((SC_SUITE0_AUTH_ENC,))
    enc = Cipher(algorithms.AES(encryption_key), modes.GCM(_iv(system_title, invocation_counter)))
    encryptor = enc.encryptor()
    encryptor.authenticate_additional_data(sc + authentication_key)
    body = encryptor.update(apdu) + encryptor.finalize() + encryptor.tag[:TAG_LENGTH]
    content = sc + invocation_counter.to_bytes(4, "big") + body
    return (
        bytes((TAG_GENERAL_GLO_CIPHERING, SYSTEM_TITLE_LENGTH))
        + system_title
        + encode_length(len(content))
        + content
    )


def open_ciphered(c: Ciphered, encryption_key: bytes, authentication_key: bytes) -> bytes:
    """Verify the tag and decrypt; a wrong key or a changed byte is :attr:`Reason.BAD_TAG`."""
    if len(c.payload) < TAG_LENGTH:
        raise FrameRejected(Reason.TRUNCATED, f"payload of {len(c.payload)} bytes has no tag")
    tag = c.payload[-TAG_LENGTH:]
    mode = modes.GCM(_iv(c.system_title, c.invocation_counter), tag, min_tag_length=TAG_LENGTH)
    decryptor = Cipher(algorithms.AES(encryption_key), mode).decryptor()
    decryptor.authenticate_additional_data(bytes((c.security_control,)) + authentication_key)
    try:
        return decryptor.update(c.payload[:-TAG_LENGTH]) + decryptor.finalize()
    except InvalidTag:
        raise FrameRejected(Reason.BAD_TAG, "authentication tag does not verify") from None


def data_notification(body: bytes, long_invoke_id: int = 0) -> bytes:
    """A DataNotification APDU without date-time (0x00), carrying ``body`` (one A-XDR Data).

    ``long_invoke_id`` is the whole Long-Invoke-Id-And-Priority (32 bits: priority, service
    class, ..., invoke id in the low 24 bits); a value outside 0..2^32-1 is a ``ValueError``."""
    if not 0 <= long_invoke_id <= 0xFFFFFFFF:
        raise ValueError("long-invoke-id-and-priority is 32 bits")
    return bytes((TAG_DATA_NOTIFICATION,)) + long_invoke_id.to_bytes(4, "big") + b"\x00" + body


def data_notification_body(apdu: bytes) -> bytes:
    """The notification body of a DataNotification APDU (its optional date-time skipped).

    The date-time is an A-XDR octet-string: 0x00 (empty, no time) or 0x0C and 12 bytes, as
    the Green Book and gurux write it; dlms-cosem writes a presence flag 0x01 and 12 bytes
    instead, which is accepted too. The long-invoke-id-and-priority is not interpreted."""
    if len(apdu) < 6 or apdu[0] != TAG_DATA_NOTIFICATION:
        raise FrameRejected(Reason.MALFORMED, "decrypted APDU is not a DataNotification")
    flag = apdu[5]
    if flag == 0:
        return apdu[6:]
    if flag not in (0x01, 0x0C):
        raise FrameRejected(Reason.MALFORMED, f"DataNotification date-time flag 0x{flag:02X}")
    if len(apdu) < 18:
        raise FrameRejected(Reason.MALFORMED, "DataNotification ends inside its date-time")
    return apdu[18:]
