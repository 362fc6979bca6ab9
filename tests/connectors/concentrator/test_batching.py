"""Batching: a batch closes when it is full by frames or by bytes, or when its oldest frame has
waited ``max_delay_s``; its size is known exactly before it is encoded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connectors.concentrator import Concentrator, InvalidFrame
from connectors.concentrator.batching import OpenBatch, RecentFrames
from connectors.dlms.batch import decode_batch, encode_batch
from tests.connectors.concentrator.fakes import (
    FakeMdms,
    fast_config,
    frames_of,
    random_frame,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)


def test_open_batch_size_is_the_encoded_size() -> None:
    batch = OpenBatch(max_frames=100, max_bytes=10_000)
    for size in (1, 17, 300, 2_700):
        batch.add(random_frame(size) if size > 1 else b"\xdb", now=0.0)
        assert batch.size == len(encode_batch(batch.frames))


def test_batch_closes_when_it_holds_max_frames(tmp_path: Path) -> None:
    mdms = FakeMdms()
    concentrator = Concentrator(mdms, fast_config(tmp_path, max_frames=10, max_delay_s=60))
    for frame in frames_of(1, 25):
        concentrator.submit(frame)
    assert concentrator.status().batches_closed == 2  # closed at once, not after the delay
    with concentrator:
        assert concentrator.drain(5)
    assert [len(decode_batch(call.body)) for call in mdms.calls] == [10, 10, 5]


def test_batch_closes_before_it_would_pass_max_batch_bytes(tmp_path: Path) -> None:
    mdms = FakeMdms()
    frames = [random_frame(500) for _ in range(9)]
    with Concentrator(mdms, fast_config(tmp_path, max_batch_bytes=1_600)) as concentrator:
        for frame in frames:
            concentrator.submit(frame)
        assert concentrator.drain(5)
    assert [len(decode_batch(call.body)) for call in mdms.calls] == [3, 3, 3]
    assert all(len(call.body) <= 1_600 for call in mdms.calls)
    assert mdms.sent_frames() == frames


def test_partial_batch_is_sent_after_max_delay_without_flush(tmp_path: Path) -> None:
    mdms = FakeMdms()
    with Concentrator(mdms, fast_config(tmp_path, max_delay_s=0.05)) as concentrator:
        submitted_at = time.monotonic()
        for frame in frames_of(1, 3):
            concentrator.submit(frame)
        assert wait_until(lambda: len(mdms.calls) == 1, timeout_s=5)
        assert mdms.calls[0].at - submitted_at >= 0.05
        assert concentrator.status().batches_closed == 1


def test_flush_closes_the_partial_batch_now(tmp_path: Path) -> None:
    concentrator = Concentrator(FakeMdms(), fast_config(tmp_path, max_delay_s=60))
    concentrator.submit(frames_of(1, 1)[0])
    concentrator.flush()
    assert concentrator.status().spooled_batches == 1


def test_frame_too_long_for_a_batch_is_invalid(tmp_path: Path) -> None:
    concentrator = Concentrator(FakeMdms(), fast_config(tmp_path, max_batch_bytes=1_000))
    with pytest.raises(InvalidFrame):
        concentrator.submit(random_frame(1_000))
    with pytest.raises(InvalidFrame):
        concentrator.submit(b"")


def test_byte_identical_frame_sent_twice_is_dropped(tmp_path: Path) -> None:
    mdms = FakeMdms()
    frame, other = frames_of(7, 2)
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        for f in (frame, frame, other, frame):
            concentrator.submit(f)
        assert concentrator.drain(5)
        status = concentrator.status()
    assert mdms.sent_frames() == [frame, other]
    assert (status.frames_submitted, status.duplicates_dropped) == (2, 2)


def test_recent_frames_forget_the_oldest_beyond_capacity() -> None:
    recent = RecentFrames(capacity=2)
    a, b, c = (RecentFrames.digest(bytes([n])) for n in range(3))
    for digest in (a, b, c):
        recent.remember(digest)
    assert a not in recent
    assert b in recent
    assert c in recent
