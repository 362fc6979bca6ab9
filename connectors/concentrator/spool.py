"""The spool: every closed batch is on disk before it is sent, so nothing is lost.

A batch is written to a temporary file, fsynced, renamed into place and its directory fsynced:
after a crash a spool file is whole or absent. The name keeps the order and carries the batch
id, ``<seq, 16 digits>_<batch id>.dlmb``; the content is the encoded batch, exactly the body
of the request. A file is deleted only after the MDMS answered 200. A batch the MDMS calls
malformed (or a file that no longer decodes) moves to ``dead/`` with a ``.why`` note beside it
and stays there for an operator. A spool opened on the same directory finds the pending batches
again, in order, under the same ids. One concentrator at a time: ``.lock`` in the directory is
held (``flock``) while the spool is open, and the kernel lets it go when the process dies.

Operators work in the directory while the concentrator runs: a file may vanish between the
listing and the ``stat``, ``open`` or ``rename`` of it, the ``dead/`` folder may be removed whole,
and a file may be half written. None of it raises out of the spool: a vanished dead letter is
simply not counted, ``dead/`` is made again when a batch next goes there, a pending batch whose
file vanished is forgotten (``dead_letter`` returns None) and a file that does not decode is
dead-lettered by the concentrator.

Not thread-safe: the concentrator serialises calls under its lock (``read`` excepted, which
touches only the file of the oldest batch).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from connectors.concentrator.errors import ConcentratorError
from connectors.dlms.batch import check_batch_id

SUFFIX = ".dlmb"
DEAD_DIR = "dead"
_TEMP_SUFFIX = ".tmp"
_LOCK = ".lock"
_NAME = re.compile(r"(\d{16})_([A-Za-z0-9._-]{1,64})\.dlmb")


@dataclass(frozen=True)
class SpooledBatch:
    seq: int
    batch_id: str
    path: Path
    size: int


class Spool:
    def __init__(
        self, directory: Path, lock_fd: int, pending: list[SpooledBatch], dead: list[SpooledBatch]
    ) -> None:
        self.directory = directory
        self._lock_fd: int | None = lock_fd
        self.dead_dir = directory / DEAD_DIR
        self._pending = deque(pending)
        self._pending_bytes = sum(b.size for b in pending)
        self._dead_count, self._dead_bytes = len(dead), sum(b.size for b in dead)
        self._next_seq = max((b.seq for b in [*pending, *dead]), default=0) + 1

    @classmethod
    def open(cls, directory: Path) -> Spool:
        """The spool in ``directory`` (created 0700), with what an earlier run left in it."""
        (directory / DEAD_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = _lock(directory)
        for leftover in directory.glob(f"*{_TEMP_SUFFIX}"):
            leftover.unlink(
                missing_ok=True
            )  # a write that never reached its rename: the batch was not taken
        return cls(directory, lock_fd, _scan(directory), _scan(directory / DEAD_DIR))

    def close(self) -> None:
        """Let another concentrator open the directory."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # ---- sizes -------------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def dead_count(self) -> int:
        return self._dead_count

    @property
    def dead_bytes(self) -> int:
        return self._dead_bytes

    @property
    def used_bytes(self) -> int:
        return self._pending_bytes + self._dead_bytes

    # ---- batches -----------------------------------------------------------------------------

    def append(self, body: bytes, id_prefix: str) -> SpooledBatch:
        """Write a closed batch durably; its id is ``id_prefix`` followed by its sequence."""
        seq = self._next_seq
        batch_id = check_batch_id(f"{id_prefix}{seq}")
        path = self.directory / f"{seq:016d}_{batch_id}{SUFFIX}"
        _write_durably(path, body)
        self._next_seq += 1
        batch = SpooledBatch(seq, batch_id, path, len(body))
        self._pending.append(batch)
        self._pending_bytes += batch.size
        return batch

    def oldest(self) -> SpooledBatch | None:
        return self._pending[0] if self._pending else None

    def read(self, batch: SpooledBatch) -> bytes:
        return batch.path.read_bytes()

    def remove(self, batch: SpooledBatch) -> None:
        """Forget the oldest batch: the MDMS answered it."""
        self._pop(batch)
        batch.path.unlink(missing_ok=True)

    def dead_letter(self, batch: SpooledBatch, why: str) -> Path | None:
        """Move the oldest batch to ``dead/`` with a note saying why; returns its new path, or
        None when its file has vanished meanwhile (the batch is forgotten: there is nothing to
        keep)."""
        self._check_oldest(batch)
        self.dead_dir.mkdir(mode=0o700, exist_ok=True)  # an operator may have removed it
        target = self.dead_dir / batch.path.name
        note = target.with_suffix(".why")
        _write_durably(note, why.encode() + b"\n")
        try:
            os.replace(batch.path, target)
        except FileNotFoundError:
            note.unlink(missing_ok=True)
            self._pop(batch)
            return None
        with contextlib.suppress(FileNotFoundError):  # dead/ removed this instant: so is the file
            _fsync_dir(self.dead_dir)
        self._pop(batch)
        self._dead_count += 1
        self._dead_bytes += batch.size
        return target

    def forget(self, batch: SpooledBatch) -> None:
        """Drop the oldest batch whose file has vanished (nothing is left to send)."""
        self._pop(batch)

    def rescan_dead(self) -> None:
        """Count the dead letters again (an operator may have taken some, or all, away)."""
        dead = _scan(self.dead_dir)
        self._dead_count, self._dead_bytes = len(dead), sum(b.size for b in dead)

    def _check_oldest(self, batch: SpooledBatch) -> None:
        if not self._pending or self._pending[0] != batch:
            raise RuntimeError(f"batch {batch.batch_id} is not the oldest of the spool")

    def _pop(self, batch: SpooledBatch) -> None:
        self._check_oldest(batch)
        self._pending.popleft()
        self._pending_bytes -= batch.size


def _lock(directory: Path) -> int:
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConcentratorError(f"another concentrator uses the spool in {directory}") from None
    return fd


def _scan(directory: Path) -> list[SpooledBatch]:
    """The batch files in ``directory``; files that vanish while it looks are left out, and a
    directory that is gone holds none."""
    found = []
    try:
        paths = list(directory.iterdir())
    except FileNotFoundError:
        return []
    for path in paths:
        match = _NAME.fullmatch(path.name)
        if not match:
            continue
        try:
            info = path.stat()  # one look: is_file() and then stat() would race
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(SpooledBatch(int(match[1]), match[2], path, info.st_size))
    return sorted(found, key=lambda b: b.seq)


def _write_durably(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + _TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
