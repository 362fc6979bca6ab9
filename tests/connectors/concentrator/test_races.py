"""File-system races in the spool and deaths of the concentrator's threads (the
concentrator keeps forwarding). Operators empty the dead-letter folder, delete spool files or
leave half-written files while the sender scans: each race is reproduced deterministically by a
hook at the moment the sender looks, and forwarding must go on afterwards."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from connectors.concentrator import BadBatch, Concentrator
from connectors.concentrator.spool import Spool
from connectors.dlms.batch import encode_batch
from tests.connectors.concentrator.fakes import FakeMdms, fast_config, frames_of, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def vanish_after_first_look(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Files named in the returned list vanish right after their first ``stat``: the moment
    between an operator's listing and the spool's second look at the file."""
    doomed: list[Path] = []
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        found = real_stat(self, follow_symlinks=follow_symlinks)
        if self in doomed:
            doomed.remove(self)
            os.unlink(self)
        return found

    monkeypatch.setattr(Path, "stat", stat)
    return doomed


def _dead_letter_one(concentrator: Concentrator, mdms: FakeMdms, meter: int) -> None:
    mdms.script.append(BadBatch(400, "malformed"))
    concentrator.submit(frames_of(meter, 1)[0])
    assert concentrator.drain(10)
    assert concentrator.status().dead_letter_batches >= 1


def test_dead_letter_emptied_during_a_scan_does_not_stop_forwarding(
    tmp_path: Path, vanish_after_first_look: list[Path]
) -> None:
    """The reported failure: ``path.stat()`` raised FileNotFoundError and killed the sender."""
    mdms = FakeMdms()
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        _dead_letter_one(concentrator, mdms, 1)
        vanish_after_first_look.extend((tmp_path / "dead").glob("*.dlmb"))
        assert wait_until(lambda: not vanish_after_first_look, timeout_s=10)  # scanned
        concentrator.submit(frames_of(2, 1)[0])
        assert concentrator.drain(10)
        assert wait_until(lambda: concentrator.status().alarm is None, timeout_s=10)
    assert frames_of(2, 1)[0] in mdms.stored


def test_dead_letter_folder_removed_whole_is_tolerated_and_made_again(tmp_path: Path) -> None:
    mdms = FakeMdms()
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        _dead_letter_one(concentrator, mdms, 1)
        shutil.rmtree(tmp_path / "dead")
        assert wait_until(lambda: concentrator.status().alarm is None, timeout_s=10)
        _dead_letter_one(concentrator, mdms, 2)  # the folder is made again for the next one
        concentrator.submit(frames_of(3, 1)[0])
        assert concentrator.drain(10)
    assert len(list((tmp_path / "dead").glob("*.dlmb"))) == 1
    assert frames_of(3, 1)[0] in mdms.stored


def test_pending_spool_file_deleted_before_it_is_sent_is_skipped_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mdms = FakeMdms()
    concentrator = Concentrator(mdms, fast_config(tmp_path, max_delay_s=60))
    concentrator.submit(frames_of(1, 1)[0])
    concentrator.flush()
    for path in tmp_path.glob("*.dlmb"):
        path.unlink()  # an operator (or a full disk cleaner) took it between scan and open
    with concentrator:
        concentrator.submit(frames_of(2, 1)[0])
        assert concentrator.drain(10)
        status = concentrator.status()
    assert mdms.sent_frames() == frames_of(2, 1)
    assert status.spooled_batches == 0
    assert status.worker_restarts == 0  # tolerated, not survived
    assert any("vanished" in r.message and r.levelno >= logging.ERROR for r in caplog.records)


def test_partially_written_spool_file_is_dead_lettered_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    whole = encode_batch(frames_of(1, 3))
    tmp_path.joinpath("0000000000000001_dc.old.1.dlmb").write_bytes(whole[: len(whole) // 2])
    tmp_path.joinpath("0000000000000002_dc.old.2.dlmb").write_bytes(b"")
    mdms = FakeMdms()
    with Concentrator(mdms, fast_config(tmp_path)) as concentrator:
        concentrator.submit(frames_of(2, 1)[0])
        assert concentrator.drain(10)
        status = concentrator.status()
    assert mdms.sent_frames() == frames_of(2, 1)
    assert status.dead_letter_batches == 2
    assert status.worker_restarts == 0


def test_scan_tolerates_a_file_vanishing_between_listing_and_stat(
    tmp_path: Path, vanish_after_first_look: list[Path]
) -> None:
    spool = Spool.open(tmp_path)
    batch = spool.append(encode_batch(frames_of(1, 1)), "dc.a.")
    spool.dead_letter(batch, "test")
    vanish_after_first_look.extend((tmp_path / "dead").glob("*.dlmb"))
    spool.rescan_dead()
    assert spool.dead_count in (0, 1)  # either view is fine; raising is not
    spool.rescan_dead()
    assert spool.dead_count == 0


def test_dead_letter_of_a_vanished_batch_forgets_it(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    batch = spool.append(encode_batch(frames_of(1, 1)), "dc.a.")
    batch.path.unlink()
    assert spool.dead_letter(batch, "damaged") is None
    assert (spool.pending_count, spool.dead_count) == (0, 0)
    assert not list((tmp_path / "dead").iterdir())  # no orphan .why note


def test_a_sender_that_dies_raises_an_alarm_and_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Any exception in a worker thread (here injected into the sender's loop) is an alarm in
    the log and the status, and the thread comes back: frames keep reaching the MDMS."""
    mdms = FakeMdms()
    concentrator = Concentrator(mdms, fast_config(tmp_path))
    real_oldest = concentrator._spool.oldest
    failures = [RuntimeError("injected bug")]

    def oldest() -> object:
        if failures:
            raise failures.pop()
        return real_oldest()

    monkeypatch.setattr(concentrator._spool, "oldest", oldest)
    with concentrator:
        assert wait_until(lambda: concentrator.status().worker_restarts == 1, timeout_s=10)
        died = concentrator.status()
        concentrator.submit(frames_of(1, 1)[0])
        assert concentrator.drain(10)
    assert mdms.sent_frames() == frames_of(1, 1)
    assert died.alarm is not None
    assert "dc-test-sender" in died.alarm
    assert "injected bug" in died.alarm
    logged = [r for r in caplog.records if "injected bug" in r.getMessage()]
    assert logged
    assert all(r.levelno >= logging.ERROR for r in logged)
