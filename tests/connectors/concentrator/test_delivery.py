"""Delivery against a hand-written MDMS fake: what each answer makes the concentrator do, the
spool bound, and crash recovery (nothing lost, resends under the same batch id)."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.concentrator import (
    BadBatch,
    Busy,
    Concentrator,
    Delivered,
    Failed,
    Refused,
    SpoolFull,
)
from connectors.dlms.batch import decode_batch
from tests.connectors.concentrator.fakes import (
    FakeMdms,
    Meter,
    RecordingBackoff,
    fast_config,
    frames_of,
    random_frame,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)


def _spool_files(spool_dir: Path) -> list[str]:
    return sorted(p.name for p in spool_dir.glob("*.dlmb"))


def test_batch_answered_200_is_removed_from_the_spool(tmp_path: Path) -> None:
    mdms = FakeMdms()
    concentrator = Concentrator(mdms, fast_config(tmp_path))
    for frame in frames_of(1, 5):
        concentrator.submit(frame)
    concentrator.flush()
    assert len(_spool_files(tmp_path)) == 1  # on disk before it is sent
    with concentrator:
        assert concentrator.drain(5)
    assert _spool_files(tmp_path) == []
    status = concentrator.status()
    assert (status.batches_delivered, status.spooled_batches, status.spooled_bytes) == (1, 0, 0)
    assert status.answers == {"accepted": 5}
    assert mdms.closed


def test_R1_1_frames_reach_the_mdms_byte_for_byte_in_order(tmp_path: Path) -> None:
    mdms = FakeMdms()
    frames = [f for meter in range(1, 6) for f in frames_of(meter, 40)]
    with Concentrator(mdms, fast_config(tmp_path, max_frames=33)) as concentrator:
        for frame in frames:
            concentrator.submit(frame)
        assert concentrator.drain(5)
    assert mdms.sent_frames() == frames


def test_rejected_frames_are_counted_by_reason_and_not_resent(tmp_path: Path) -> None:
    mdms = FakeMdms()
    frames = frames_of(1, 6)
    mdms.reject = {frames[1]: "replay", frames[4]: "bad_tag", frames[5]: "replay"}
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        for frame in frames:
            concentrator.submit(frame)
        assert concentrator.drain(5)
        status = concentrator.status()
    assert len(mdms.calls) == 1
    assert status.answers == {"accepted": 3, "rejected": 3}
    assert status.rejections == {"replay": 2, "bad_tag": 1}


def test_503_retry_after_is_honoured_and_the_batch_resent_under_its_id(tmp_path: Path) -> None:
    mdms = FakeMdms([Busy(503, 0.3), Busy(429, 0.1)])
    backoff = RecordingBackoff(0.01, 0.08)
    with Concentrator(mdms, fast_config(tmp_path), backoff) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(5)
        status = concentrator.status()
    first, second, third = mdms.calls
    assert second.at - first.at >= 0.3
    assert third.at - second.at >= 0.1
    assert first.batch_id == second.batch_id == third.batch_id
    assert first.body == second.body == third.body
    assert backoff.chosen == []  # the MDMS said how long to wait
    assert (status.retries, status.batches_sent, status.batches_delivered) == (2, 3, 1)


def test_busy_without_retry_after_backs_off(tmp_path: Path) -> None:
    mdms = FakeMdms([Busy(503, None)])
    backoff = RecordingBackoff(0.01, 0.08)
    with Concentrator(mdms, fast_config(tmp_path), backoff) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(5)
    assert [attempt for attempt, _ in backoff.chosen] == [0]


def test_backoff_grows_and_is_capped_while_the_mdms_is_unreachable(tmp_path: Path) -> None:
    mdms = FakeMdms([Failed("ConnectError: refused")] * 7)
    backoff = RecordingBackoff(0.01, 0.08)
    with Concentrator(mdms, fast_config(tmp_path), backoff) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(10)
    assert [attempt for attempt, _ in backoff.chosen] == list(range(7))
    ceilings = [backoff.ceiling(attempt) for attempt, _ in backoff.chosen]
    assert ceilings == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08]
    for (_, chosen), ceiling in zip(backoff.chosen, ceilings, strict=True):
        assert ceiling / 2 <= chosen <= ceiling
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(mdms.calls)]
    assert all(gap >= chosen for gap, (_, chosen) in zip(gaps, backoff.chosen, strict=True))
    assert len(mdms.calls) == 8


def test_success_resets_the_backoff(tmp_path: Path) -> None:
    mdms = FakeMdms([Failed("timeout"), Failed("timeout")])
    backoff = RecordingBackoff(0.01, 0.08)
    with Concentrator(mdms, fast_config(tmp_path), backoff) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(5)
        mdms.script.append(Failed("timeout"))
        concentrator.submit(frames_of(2, 1)[0])
        assert concentrator.drain(5)
        assert concentrator.status().mdms_failing_since is None
    assert [attempt for attempt, _ in backoff.chosen] == [0, 1, 0]


@pytest.mark.parametrize("status", [400, 413])
def test_bad_batch_goes_to_dead_letter_with_an_alarm_and_is_not_retried(
    tmp_path: Path, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    mdms = FakeMdms([BadBatch(status, "the batch is malformed")])
    first, second = frames_of(1, 1), frames_of(2, 1)
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        concentrator.submit(first[0])
        concentrator.flush()
        concentrator.submit(second[0])
        assert concentrator.drain(5)
        snapshot = concentrator.status()
    dead = sorted((tmp_path / "dead").glob("*.dlmb"))
    assert [decode_batch(p.read_bytes()) for p in dead] == [first]
    assert f"answered {status}" in dead[0].with_suffix(".why").read_text()
    assert snapshot.dead_letter_batches == 1
    assert snapshot.alarm is not None
    assert "dead-letter" in snapshot.alarm
    assert mdms.sent_frames() == first + second  # the next batch went on; no resend of the bad one
    assert [r.levelno for r in caplog.records if "ALARM" in r.message] == [logging.ERROR]


def test_dead_letter_alarm_clears_when_an_operator_empties_the_folder(tmp_path: Path) -> None:
    mdms = FakeMdms([BadBatch(400, "malformed")])
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(5)
        assert concentrator.status().alarm is not None
        for path in (tmp_path / "dead").iterdir():
            path.unlink()
        assert wait_until(lambda: concentrator.status().alarm is None, timeout_s=5)


def test_dead_letters_of_an_earlier_run_raise_the_alarm_at_start(tmp_path: Path) -> None:
    with Concentrator(FakeMdms([BadBatch(400, "malformed")]), fast_config(tmp_path)) as first:
        first.submit(frames_of(1, 1)[0])
        assert first.drain(5)
    second = Concentrator(FakeMdms(), fast_config(tmp_path))
    assert second.status().dead_letter_batches == 1
    assert "earlier run" in (second.status().alarm or "")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_certificate_keeps_the_spool_raises_an_alarm_and_retries_slowly(
    tmp_path: Path, status: int
) -> None:
    mdms = FakeMdms([Refused(status, "certificate revoked")] * 2)
    backoff = RecordingBackoff(0.01, 0.2)
    config = fast_config(tmp_path, backoff_cap_s=0.2)
    with Concentrator(mdms, config, backoff) as concentrator:
        concentrator.submit(frames_of(1, 1)[0])
        concentrator.flush()
        assert wait_until(lambda: len(mdms.calls) >= 1)
        refused = concentrator.status()
        assert concentrator.drain(5)
        delivered = concentrator.status()
    assert refused.alarm is not None
    assert "certificate refused or revoked" in refused.alarm
    assert refused.spooled_batches == 1
    assert mdms.calls[1].at - mdms.calls[0].at >= 0.2  # the cap, not the first backoff step
    assert delivered.alarm is None
    assert delivered.batches_delivered == 1


def test_report_that_misses_frames_is_not_taken_as_delivery(tmp_path: Path) -> None:
    good = FakeMdms()
    partial = good._store("x", frames_of(9, 1))  # answers one frame, the batch has two
    mdms = FakeMdms([Delivered(partial)])
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        for frame in frames_of(1, 2):
            concentrator.submit(frame)
        assert concentrator.drain(5)
    assert len(mdms.calls) == 2
    assert mdms.sent_frames()[:2] == mdms.sent_frames()[2:]


def test_spool_full_refuses_frames_with_one_alarm_then_clears_after_drain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mdms = FakeMdms()
    mdms.down = True
    config = fast_config(tmp_path, max_frames=4, max_batch_bytes=4_096, max_spool_bytes=8_192)
    frames = [random_frame(500) for _ in range(40)]
    with Concentrator(mdms, config) as concentrator:
        concentrator.submit(frames[0])
        assert wait_until(lambda: concentrator.status().last_error is not None)
        taken = 1 + _submit_until_full(concentrator, frames[1:])
        for frame in frames[taken : taken + 10]:  # meters keep trying: no new alarm per frame
            with pytest.raises(SpoolFull):
                concentrator.submit(frame)
        full = concentrator.status()
        mdms.down = False
        assert concentrator.drain(5)
        drained = concentrator.status()
        for start in range(taken, len(frames), 4):  # the meters submit their held frames
            for frame in frames[start : start + 4]:
                concentrator.submit(frame)
            assert concentrator.drain(5)
    assert full.spooled_bytes <= 8_192
    assert full.alarm is not None
    assert full.alarm.startswith("spool full: ")
    assert "MDMS unreachable since" in full.alarm
    assert "meters must hold their frames" in full.alarm
    assert full.frames_refused == 11
    assert drained.alarm is None
    assert sorted(mdms.stored) == sorted(frames)  # nothing lost
    logged = [(r.levelno, r.message.split(":")[0]) for r in caplog.records if "spool_" in r.message]
    assert logged == [
        (logging.ERROR, "ALARM spool_full"),
        (logging.WARNING, "alarm spool_full cleared"),
    ]


def _submit_until_full(concentrator: Concentrator, frames: list[bytes]) -> int:
    for taken, frame in enumerate(frames):
        try:
            concentrator.submit(frame)
        except SpoolFull:
            return taken
    raise AssertionError("the spool never filled up")


_CRASHING_RUN = """
import os, ssl, sys
from pathlib import Path
from connectors.concentrator import Concentrator
from tests.connectors.concentrator.fakes import fast_config, frames_of
config = fast_config(Path(sys.argv[1]), max_frames=7, max_delay_s=60)
concentrator = Concentrator.over_https("https://127.0.0.1:9", ssl.create_default_context(), config)
for frame in frames_of(3, 30):
    concentrator.submit(frame)
concentrator.flush()
os._exit(9)
"""


def test_crash_recovery_delivers_what_the_first_run_left_under_the_same_ids(
    tmp_path: Path,
) -> None:
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_RUN, str(tmp_path)],
        cwd=Path(__file__).parents[3],
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 9  # died holding the spool's lock, never stopped
    left = _spool_files(tmp_path)
    assert len(left) == 5
    mdms = FakeMdms()
    with Concentrator(mdms, fast_config(tmp_path)) as recovered:
        assert recovered.drain(5)
    assert mdms.batch_ids() == [name.split("_", 1)[1].removesuffix(".dlmb") for name in left]
    assert mdms.sent_frames() == frames_of(3, 30)
    assert _spool_files(tmp_path) == []


def test_submit_is_thread_safe_across_many_meters(tmp_path: Path) -> None:
    mdms = FakeMdms()
    frames = {meter: frames_of(meter, 200) for meter in range(8)}
    with Concentrator(mdms, fast_config(tmp_path, max_frames=64)) as concentrator:
        meters = [Meter(concentrator, fs, timeout_s=10) for fs in frames.values()]
        for meter in meters:
            meter.start()
        for meter in meters:
            meter.join(10)
        assert concentrator.drain(10)
        status = concentrator.status()
    sent = mdms.sent_frames()
    assert sorted(sent) == sorted(f for fs in frames.values() for f in fs)
    for number, fs in frames.items():  # each meter's frames keep their order
        assert [f for f in sent if f[2:10] == number.to_bytes(8, "big")] == fs
    assert status.frames_submitted == 1_600
    assert all(len(decode_batch(call.body)) <= 64 for call in mdms.calls)


def test_stop_spools_the_open_batch_and_the_next_run_delivers_it(tmp_path: Path) -> None:
    frames = frames_of(4, 3)
    with Concentrator(FakeMdms([Failed("down")] * 100), fast_config(tmp_path)) as first:
        for frame in frames:
            first.submit(frame)
    with pytest.raises(RuntimeError, match="stopped"):
        first.submit(frames_of(4, 1, start=99)[0])
    mdms = FakeMdms()
    with Concentrator(mdms, fast_config(tmp_path)) as second:
        assert second.drain(5)
    assert mdms.sent_frames() == frames


def test_unwritable_spool_refuses_the_frame_and_keeps_the_batch_in_memory(
    tmp_path: Path,
) -> None:
    spool_dir, moved = tmp_path / "spool", tmp_path / "moved"
    mdms = FakeMdms()
    concentrator = Concentrator(mdms, fast_config(spool_dir, max_delay_s=60))
    first, second = frames_of(5, 2)
    concentrator.submit(first)
    spool_dir.rename(moved)
    spool_dir.write_bytes(b"not a directory")  # every write into the spool now fails
    with pytest.raises(SpoolFull, match="cannot write the spool"):
        concentrator.flush()
    assert "cannot write the spool" in (concentrator.status().alarm or "")
    spool_dir.unlink()
    moved.rename(spool_dir)
    concentrator.submit(second)
    with concentrator:
        assert concentrator.drain(5)
        assert concentrator.status().alarm is None
    assert mdms.sent_frames() == [first, second]
