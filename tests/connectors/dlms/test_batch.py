"""The concentrator → MDMS batch framing (R1.1: the concentrator forwards frames unread)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.dlms import batch
from connectors.dlms.batch import BatchError
from tests.connectors.dlms.vectors import FAST


def test_batch_layout_is_magic_version_count_then_length_prefixed_frames() -> None:
    body = batch.encode_batch([b"\xdb\x01", b"\xdb\x02\x03"])
    assert body == (
        b"DLMB" + b"\x01" + b"\x00\x00\x00\x02"
        + b"\x00\x00\x00\x02" + b"\xdb\x01"
        + b"\x00\x00\x00\x03" + b"\xdb\x02\x03"
    )  # fmt: skip
    assert batch.decode_batch(body) == [b"\xdb\x01", b"\xdb\x02\x03"]


def test_largest_batch_round_trips() -> None:
    frames = [bytes((i % 256,)) for i in range(batch.MAX_FRAMES - 1)] + [
        b"\xff" * batch.MAX_FRAME_BYTES
    ]
    assert batch.decode_batch(batch.encode_batch(frames)) == frames


_frames = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=40)


@FAST
@given(_frames)
def test_decode_of_encode_gives_back_the_frames(frames: list[bytes]) -> None:
    assert batch.decode_batch(batch.encode_batch(frames)) == frames


def header(count: int, magic: bytes = b"DLMB", version: int = 1) -> bytes:
    return struct.pack(">4sBI", magic, version, count)


def framed(frame: bytes, length: int | None = None) -> bytes:
    return struct.pack(">I", len(frame) if length is None else length) + frame


BAD_BODIES = {
    "empty": (b"", "shorter than the batch header"),
    "short header": (header(1)[:8], "shorter than the batch header"),
    "wrong magic": (header(1, b"DLMC") + framed(b"\xdb"), "does not start with"),
    "version 2": (header(1, version=2) + framed(b"\xdb"), "version 2"),
    "count 0": (header(0), "announces 0 frames"),
    "count too many": (header(batch.MAX_FRAMES + 1) + framed(b"\xdb"), "announces 10001 frames"),
    "frame length 0": (header(1) + framed(b"", 0), "announces 0 bytes"),
    "frame length too big": (header(1) + framed(b"\xdb", 65_536), "announces 65536 bytes"),
    "length cut short": (header(2) + framed(b"\xdb") + b"\x00\x00", "before the length of frame 1"),
    "frame cut short": (header(1) + framed(b"\xdb\x08", 3), "announces 3 bytes, 2 remain"),
    "fewer frames than announced": (header(3) + framed(b"\xdb") * 2, "frame 2 of 3"),
    "trailing bytes": (header(1) + framed(b"\xdb") + b"\x00", "1 bytes after the last"),
}


@pytest.mark.parametrize(("body", "message"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_body_that_is_no_batch_is_refused_saying_where(body: bytes, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        batch.decode_batch(body)


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"\xdb"] * (batch.MAX_FRAMES + 1),
        [b"\xdb", b""],
        [b"\xdb" * (batch.MAX_FRAME_BYTES + 1)],
    ],
    ids=["no frames", "too many frames", "an empty frame", "a frame too long"],
)
def test_encode_batch_refuses_what_decode_batch_would(frames: list[bytes]) -> None:
    with pytest.raises(BatchError):
        batch.encode_batch(frames)


def test_batch_error_is_a_value_error() -> None:
    assert issubclass(BatchError, ValueError)


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_a_batch_or_a_batch_error(body: bytes) -> None:
    for candidate in (body, header(2) + body, header(1) + body):
        try:
            frames = batch.decode_batch(candidate)
        except BatchError:
            continue
        assert batch.encode_batch(frames) == candidate


@pytest.mark.parametrize("batch_id", ["a", "A" * 64, "2024-03-01T00.15_dc-7", "0.1_-Z"])
def test_check_batch_id_accepts_the_documented_alphabet(batch_id: str) -> None:
    assert batch.check_batch_id(batch_id) == batch_id


@pytest.mark.parametrize(
    "batch_id", ["", "A" * 65, "a b", "a/b", "abc\n", "é", "a:b", "١٢"], ids=repr
)
def test_check_batch_id_refuses_anything_else(batch_id: str) -> None:
    with pytest.raises(BatchError, match="X-Batch-Id"):
        batch.check_batch_id(batch_id)
