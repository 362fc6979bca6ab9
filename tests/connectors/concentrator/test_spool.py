"""The spool on disk: one file per batch, named so the order and the batch id survive a restart,
holding exactly the encoded batch; half-written files never count."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.concentrator import ConcentratorError
from connectors.concentrator.spool import Spool, SpooledBatch
from connectors.dlms.batch import encode_batch
from tests.connectors.concentrator.fakes import frames_of


def _body(meter: int) -> bytes:
    return encode_batch(frames_of(meter, 3))


def test_a_batch_file_holds_the_encoded_batch_under_its_id_and_order(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    first = spool.append(_body(1), "dc.run.")
    second = spool.append(_body(2), "dc.run.")
    assert first.path.name == "0000000000000001_dc.run.1.dlmb"
    assert second.path.name == "0000000000000002_dc.run.2.dlmb"
    assert first.path.read_bytes() == _body(1)
    assert (spool.pending_count, spool.pending_bytes) == (2, len(_body(1)) + len(_body(2)))
    assert oct(first.path.stat().st_mode & 0o777) == "0o600"


def test_reopened_spool_finds_pending_batches_in_order(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    made = [spool.append(_body(n), "dc.a.") for n in range(12)]
    spool.close()
    again = Spool.open(tmp_path)
    assert [b.batch_id for b in _all(again)] == [b.batch_id for b in made]
    assert again.append(_body(99), "dc.b.").seq == 13  # numbering goes on, order kept


def test_half_written_temporary_file_is_discarded_on_open(tmp_path: Path) -> None:
    first = Spool.open(tmp_path)
    first.append(_body(1), "dc.a.")
    first.close()
    (tmp_path / "0000000000000002_dc.a.2.dlmb.tmp").write_bytes(b"DLMB\x01")
    spool = Spool.open(tmp_path)
    assert spool.pending_count == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_removed_batch_file_is_gone(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    batch = spool.append(_body(1), "dc.a.")
    spool.remove(batch)
    assert not batch.path.exists()
    assert (spool.pending_count, spool.used_bytes) == (0, 0)


def test_dead_letter_keeps_the_batch_with_a_note_and_counts_it(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    batch = spool.append(_body(1), "dc.a.")
    target = spool.dead_letter(batch, "the MDMS answered 400: malformed")
    assert target is not None
    assert target.read_bytes() == _body(1)
    assert target.with_suffix(".why").read_text() == "the MDMS answered 400: malformed\n"
    assert (spool.pending_count, spool.dead_count, spool.used_bytes) == (0, 1, len(_body(1)))
    target.unlink()
    spool.rescan_dead()
    assert spool.dead_count == 0


def test_only_the_oldest_batch_can_be_removed(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    spool.append(_body(1), "dc.a.")
    second = spool.append(_body(2), "dc.a.")
    with pytest.raises(RuntimeError, match="not the oldest"):
        spool.remove(second)


def _all(spool: Spool) -> list[SpooledBatch]:
    found = []
    while (batch := spool.oldest()) is not None:
        found.append(batch)
        spool.remove(batch)
    return found


def test_one_concentrator_at_a_time_uses_a_spool_directory(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    with pytest.raises(ConcentratorError, match="another concentrator"):
        Spool.open(tmp_path)
    spool.close()
    Spool.open(tmp_path).close()
