"""The batch framing between a data concentrator and the MDMS (``POST /mdms/v1/frames``).

A concentrator cannot read the frames it carries (R1.1): it forwards the ciphered APDUs exactly
as the meters sent them, many per request. The body (media type
``application/vnd.x1332.dlms-frames``) is::

    "DLMB" | version (1 byte, 1) | count (uint32, big-endian)
    count x ( length (uint32, big-endian) | frame: one general-glo-ciphering APDU )

A batch carries 1 to ``MAX_FRAMES`` frames of 1 to ``MAX_FRAME_BYTES`` bytes each. The batch's
identity travels in the ``X-Batch-Id`` header (1-64 of ``[A-Za-z0-9._-]``); a concentrator
resends a batch under the same id, and the MDMS answers each frame of it ``accepted``,
``duplicate`` or ``rejected`` with a reason. ``docs/dlms-profile.md`` documents the framing.

The framing is length-prefixed binary rather than JSON: hex or base64 inside JSON would
enlarge a 2.7 kB day-frame by a third to a half and cost a parse per frame.

The answer (a JSON body) is written by the MDMS (``broker.api.mdms``) and read by the
concentrator (``connectors.concentrator.mdms``); what both sides say of the batch as a whole is
:class:`BatchTotals`, which each extends with its own view of the frames.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from pydantic import BaseModel

MEDIA_TYPE = "application/vnd.x1332.dlms-frames"
MAGIC = b"DLMB"
VERSION = 1
MAX_FRAMES = 10_000
MAX_FRAME_BYTES = 65_535
_HEADER = struct.Struct(">4sBI")
_LENGTH = struct.Struct(">I")
_BATCH_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class BatchTotals(BaseModel):
    """The MDMS's answer to a batch as a whole: the batch's id, the frames it received, how many
    were accepted, duplicate and rejected, and the rejections per reason."""

    batch_id: str
    received: int
    accepted: int
    duplicate: int
    rejected: int
    reasons: dict[str, int]


class BatchError(ValueError):
    """The body is not a well-formed batch; the message says where it breaks."""


def check_batch_id(batch_id: str) -> str:
    if not _BATCH_ID.fullmatch(batch_id):
        raise BatchError("X-Batch-Id must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
    return batch_id


def encode_batch(frames: Sequence[bytes]) -> bytes:
    """Frame a batch; raises :class:`BatchError` on an empty, oversized or overlong batch."""
    if not 1 <= len(frames) <= MAX_FRAMES:
        raise BatchError(f"a batch carries 1 to {MAX_FRAMES} frames, not {len(frames)}")
    parts = [_HEADER.pack(MAGIC, VERSION, len(frames))]
    for i, frame in enumerate(frames):
        if not 1 <= len(frame) <= MAX_FRAME_BYTES:
            raise BatchError(f"frame {i} has {len(frame)} bytes (1 to {MAX_FRAME_BYTES} allowed)")
        parts.append(_LENGTH.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def decode_batch(body: bytes) -> list[bytes]:
    """The frames of a batch body, in order; every inconsistency is a :class:`BatchError`."""
    if len(body) < _HEADER.size:
        raise BatchError(f"body of {len(body)} bytes is shorter than the batch header")
    magic, version, count = _HEADER.unpack_from(body)
    if magic != MAGIC:
        raise BatchError(f"body does not start with {MAGIC!r} (a {MEDIA_TYPE} batch)")
    if version != VERSION:
        raise BatchError(f"batch version {version} is not supported (only {VERSION})")
    if not 1 <= count <= MAX_FRAMES:
        raise BatchError(f"batch announces {count} frames (1 to {MAX_FRAMES} allowed)")
    frames: list[bytes] = []
    pos = _HEADER.size
    for i in range(count):
        if pos + _LENGTH.size > len(body):
            raise BatchError(f"body ends before the length of frame {i} of {count}")
        (length,) = _LENGTH.unpack_from(body, pos)
        pos += _LENGTH.size
        if not 1 <= length <= MAX_FRAME_BYTES:
            raise BatchError(f"frame {i} announces {length} bytes (1 to {MAX_FRAME_BYTES} allowed)")
        if pos + length > len(body):
            raise BatchError(f"frame {i} announces {length} bytes, {len(body) - pos} remain")
        frames.append(body[pos : pos + length])
        pos += length
    if pos != len(body):
        raise BatchError(f"{len(body) - pos} bytes after the last announced frame")
    return frames
