"""The data concentrator: takes frames from many meters, batches them, spools every batch to disk
and forwards it to the MDMS until the MDMS has answered it.

It carries the ciphered APDUs as opaque bytes and holds no meter key (R1.1). Guarantees:

* a frame ``submit`` took reaches the spool within ``max_delay_s`` (at once when its batch is
  full, and at ``flush``/``stop``), and its spool file is deleted only after a 200 answer, so a
  crash loses at most the open batch of the last ``max_delay_s``;
* batches are sent one at a time, oldest first, under the id they got when they were closed,
  also by a new concentrator on the same spool directory; resends are safe because the MDMS
  deduplicates;
* the spool is bounded: when it is full ``submit`` raises :class:`SpoolFull` and the meter keeps
  its frame, and an alarm says so until the spool has drained.

Two background threads do the work: one closes batches by age, one sends. Both are supervised
(:class:`broker.kit.supervise.Supervised`): a thread that raises is logged at CRITICAL, raises
the ``worker_died`` alarm (it stays in the status until this concentrator is restarted: it is a
bug to report), counts in ``worker_restarts`` and is started again with a backoff, so the
concentrator never stops forwarding silently. File-system races in the spool (an operator
emptying ``dead/`` or deleting spool files while the sender looks) are tolerated, not survived.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import time
from types import TracebackType

from broker.kit.supervise import Death, Supervised
from connectors.concentrator import alarms
from connectors.concentrator.alarms import AlarmKind, Alarms
from connectors.concentrator.backoff import Backoff
from connectors.concentrator.batching import (
    BATCH_HEADER_BYTES,
    FRAME_OVERHEAD_BYTES,
    OpenBatch,
    RecentFrames,
    frame_fits_a_batch,
)
from connectors.concentrator.config import ConcentratorConfig
from connectors.concentrator.errors import InvalidFrame, SpoolFull
from connectors.concentrator.https import HttpsMdmsClient
from connectors.concentrator.link import Link
from connectors.concentrator.mdms import (
    BadBatch,
    BatchReport,
    Busy,
    Delivered,
    Failed,
    MdmsClient,
    Outcome,
    Refused,
)
from connectors.concentrator.spool import Spool, SpooledBatch
from connectors.concentrator.status import ConcentratorStatus, Counters
from connectors.dlms.batch import BatchError, decode_batch, encode_batch

logger = logging.getLogger(__name__)

_IDLE_WAIT_S = 1.0  # the longest a background thread sleeps without looking around


class Concentrator:
    def __init__(
        self, mdms: MdmsClient, config: ConcentratorConfig, backoff: Backoff | None = None
    ) -> None:
        self.config = config
        self._mdms = mdms
        self._spool = Spool.open(config.spool_dir)
        self._id_prefix = f"{config.name}.{secrets.token_hex(4)}."
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open = OpenBatch(config.max_frames, config.max_batch_bytes)
        self._recent = RecentFrames(config.dedup_window)
        self._counters = Counters()
        self._link = Link(backoff or Backoff(config.backoff_base_s, config.backoff_cap_s))
        self._alarms = Alarms(logger)
        self._full = False
        self._stopping = False
        self._threads: list[Supervised] = []
        self._dead_scanned_at = 0.0
        self._announce_leftovers()

    @classmethod
    def over_https(
        cls, mdms_url: str, ssl_context: ssl.SSLContext, config: ConcentratorConfig
    ) -> Concentrator:
        """A concentrator that sends to ``{mdms_url}/mdms/v1/frames`` with mutual TLS."""
        return cls(HttpsMdmsClient(mdms_url, ssl_context, config.request_timeout_s), config)

    # ---- the meters' side --------------------------------------------------------------------

    def submit(self, frame: bytes) -> None:
        """Take one frame (thread-safe). :class:`SpoolFull`: hold the frame, submit it later;
        :class:`InvalidFrame`: no batch can carry it."""
        if not frame_fits_a_batch(len(frame), self.config.max_batch_bytes):
            raise InvalidFrame(f"a frame of {len(frame)} bytes does not fit a batch")
        digest = RecentFrames.digest(frame)
        with self._lock:
            self._check_running()
            if digest in self._recent:
                self._counters.duplicates_dropped += 1
                return
            self._make_room(len(frame))
            self._open.add(frame, time.monotonic())
            self._recent.remember(digest)
            self._counters.frames_submitted += 1
            if len(self._open.frames) == 1:
                self._changed.notify_all()  # the closer learns the new batch's deadline
            if self._open.full:
                self._close_batch_if_possible()  # the frame is taken either way

    def flush(self) -> None:
        """Close the open batch now (it is on disk when this returns)."""
        with self._lock:
            self._close_batch()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every frame taken so far has been answered (or dead-lettered)."""
        deadline = time.monotonic() + timeout_s
        self.flush()
        with self._lock:
            while self._spool.pending_count or self._open.frames:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def status(self) -> ConcentratorStatus:
        with self._lock:
            c, spool = self._counters, self._spool
            return ConcentratorStatus(
                frames_submitted=c.frames_submitted,
                frames_refused=c.frames_refused,
                duplicates_dropped=c.duplicates_dropped,
                batches_closed=c.batches_closed,
                batches_sent=c.batches_sent,
                batches_delivered=c.batches_delivered,
                answers=dict(c.answers),
                rejections=dict(c.rejections),
                retries=c.retries,
                worker_restarts=c.worker_restarts,
                spooled_batches=spool.pending_count,
                spooled_bytes=spool.pending_bytes,
                dead_letter_batches=spool.dead_count,
                dead_letter_bytes=spool.dead_bytes,
                alarms=self._alarms.messages(),
                last_error=self._link.last_error,
                mdms_failing_since=self._link.failing_since,
            )

    # ---- life cycle --------------------------------------------------------------------------

    def start(self) -> Concentrator:
        with self._lock:
            if self._threads or self._stopping:
                raise RuntimeError("a concentrator is started once")
            name = self.config.name
            base_s, cap_s = self.config.backoff_base_s, self.config.backoff_cap_s
            self._threads = [
                Supervised(
                    f"{name}-{role}",
                    body,
                    on_death=self._worker_died,
                    base_s=base_s,
                    cap_s=cap_s,
                    log=logger,
                )
                for role, body in (("batcher", self._close_by_age), ("sender", self._send_all))
            ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Spool the open batch, stop the threads (an answer in flight is awaited), close."""
        with self._lock:
            self._stopping = True
            self._close_batch_if_possible()
            if self._open.frames:
                logger.error("stopping with %d frames not spooled", len(self._open.frames))
            self._changed.notify_all()
        for thread in self._threads:
            thread.request_stop()
        wait = self.config.request_timeout_s + 5 if timeout_s is None else timeout_s
        for thread in self._threads:
            thread.join(wait)
        self._mdms.close()
        if any(thread.is_alive() for thread in self._threads):
            logger.error("the concentrator's threads did not stop; the spool stays locked")
            return
        self._spool.close()

    def __enter__(self) -> Concentrator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _worker_died(self, death: Death) -> None:
        with self._lock:
            self._counters.worker_restarts += 1
            text = alarms.worker_died_text(death.worker, death.deaths, death.error)
            self._alarms.raise_alarm(AlarmKind.WORKER_DIED, text)
            self._changed.notify_all()

    def _check_running(self) -> None:
        if self._stopping:
            raise RuntimeError("the concentrator is stopped: it takes no more frames")

    # ---- batching (under the lock) -----------------------------------------------------------

    def _make_room(self, frame_len: int) -> None:
        self._resume_if_drained()
        # counted as if the frame opened a batch of its own: a few bytes too many at worst
        grown = BATCH_HEADER_BYTES + FRAME_OVERHEAD_BYTES + frame_len
        if self._full or self._spool.used_bytes + self._open.size + grown > self._bound:
            self._declare_full()
            self._counters.frames_refused += 1
            raise SpoolFull(self._alarms.message(AlarmKind.SPOOL_FULL))
        if not self._open.fits(frame_len):
            self._close_batch()

    def _close_batch(self) -> None:
        if not self._open.frames:
            return
        try:
            self._spool.append(encode_batch(self._open.frames), self._id_prefix)
        except OSError as exc:
            text = alarms.spool_unwritable_text(self._spool.directory, exc)
            self._alarms.raise_alarm(AlarmKind.SPOOL_UNWRITABLE, text)
            raise SpoolFull(text) from exc
        self._alarms.clear(AlarmKind.SPOOL_UNWRITABLE, "the spool is written again")
        self._open.clear()
        self._counters.batches_closed += 1
        self._changed.notify_all()

    def _close_by_age(self) -> None:
        with self._lock:
            while not self._stopping:
                due = self._open.due_at(self.config.max_delay_s)
                left = _IDLE_WAIT_S if due is None else due - time.monotonic()
                if left > 0:
                    self._changed.wait(min(left, _IDLE_WAIT_S))
                    continue
                if not self._close_batch_if_possible():
                    self._changed.wait(self.config.max_delay_s)

    def _close_batch_if_possible(self) -> bool:
        """Close the open batch; False (the alarm raised) when the spool cannot be written."""
        try:
            self._close_batch()
        except SpoolFull:
            return False
        return True

    # ---- spool bound (under the lock) --------------------------------------------------------

    @property
    def _bound(self) -> int:
        return self.config.max_spool_bytes

    def _declare_full(self) -> None:
        self._full = True
        spool, link = self._spool, self._link
        text = alarms.spool_full_text(
            spool.used_bytes + self._open.size,
            self._bound,
            spool.directory,
            spool.dead_bytes,
            link.failing_since,
            link.last_error,
        )
        self._alarms.raise_alarm(AlarmKind.SPOOL_FULL, text)

    def _resume_if_drained(self) -> None:
        level = int(self._bound * self.config.resume_fraction)
        if self._full and self._spool.used_bytes + self._open.size <= level:
            self._full = False
            self._alarms.clear(AlarmKind.SPOOL_FULL, f"spool down to {alarms.human_size(level)}")

    # ---- sending -----------------------------------------------------------------------------

    def _send_all(self) -> None:
        while (batch := self._next_batch()) is not None:
            loaded = self._load(batch)
            if loaded is None:
                continue
            body, count = loaded
            outcome = self._send(batch, body)
            with self._lock:
                self._settle(batch, count, outcome)
                self._changed.notify_all()

    def _next_batch(self) -> SpooledBatch | None:
        with self._lock:
            while not self._stopping:
                self._watch_dead_letters()
                batch = self._spool.oldest()
                left = self._link.wait_s()
                if batch is not None and left <= 0:
                    return batch
                self._changed.wait(min(left, _IDLE_WAIT_S) if batch else _IDLE_WAIT_S)
            return None

    def _load(self, batch: SpooledBatch) -> tuple[bytes, int] | None:
        try:
            body = self._spool.read(batch)
            return body, len(decode_batch(body))
        except FileNotFoundError:
            with self._lock:
                self._spool.forget(batch)
                logger.error(
                    "the spool file of batch %s vanished before it was sent (deleted by hand?); "
                    "its frames reach the MDMS only if the meters submit them again",
                    batch.batch_id,
                )
                self._changed.notify_all()
            return None
        except (OSError, BatchError) as exc:
            with self._lock:
                self._dead_letter(batch, f"the spool file is damaged: {exc}")
                self._changed.notify_all()
            return None

    def _send(self, batch: SpooledBatch, body: bytes) -> Outcome:
        try:
            return self._mdms.send(batch.batch_id, body)
        except Exception as exc:  # a bug in the client must not stop the sender: log, retry
            logger.exception("sending batch %s failed unexpectedly", batch.batch_id)
            return Failed(f"{type(exc).__name__}: {exc}")

    def _settle(self, batch: SpooledBatch, count: int, outcome: Outcome) -> None:
        self._counters.batches_sent += 1
        match outcome:
            case Delivered(report) if report.covers(batch.batch_id, count):
                self._delivered(batch, report)
            case Delivered():
                self._failed(f"the answer to batch {batch.batch_id} misses some of its frames")
            case Busy(status, retry_after_s):
                self._busy(status, retry_after_s)
            case BadBatch(status, detail):
                self._reachable()
                self._dead_letter(batch, f"the MDMS answered {status}: {detail}")
            case Refused(status, detail):
                self._refused(status, detail)
            case Failed(detail):
                self._failed(detail)

    # ---- outcomes (under the lock) -----------------------------------------------------------

    def _delivered(self, batch: SpooledBatch, report: BatchReport) -> None:
        self._spool.remove(batch)
        self._counters.batches_delivered += 1
        for frame in report.frames:
            self._counters.answers[frame.status] += 1
            if frame.status == "rejected":
                self._counters.rejections[frame.reason or "unspecified"] += 1
        if report.rejected:
            logger.warning(
                "batch %s: %d frames rejected %s",
                batch.batch_id,
                report.rejected,
                dict(report.reasons),
            )
        self._reachable()
        self._resume_if_drained()

    def _busy(self, status: int, retry_after_s: float | None) -> None:
        if retry_after_s is None:
            delay = self._link.next_backoff()
        else:  # honoured, but "Retry-After: 0" must not make a busy loop
            delay = max(retry_after_s, self._link.backoff.base_s)
        self._retry(f"MDMS busy ({status}), retrying in {delay:.3g} s", delay)

    def _failed(self, detail: str) -> None:
        self._retry(detail, self._link.next_backoff())

    def _refused(self, status: int, detail: str) -> None:
        slowly = self._link.backoff.cap_s
        text = alarms.refused_text(status, detail, self._spool.pending_count, slowly)
        self._alarms.raise_alarm(AlarmKind.REFUSED, text)
        self._retry(f"MDMS answered {status}: {detail}", slowly)

    def _retry(self, detail: str, delay_s: float) -> None:
        self._counters.retries += 1
        self._link.trouble(detail, delay_s)

    def _reachable(self) -> None:
        self._alarms.clear(AlarmKind.REFUSED, "the MDMS accepts this concentrator again")
        self._link.reachable()

    def _dead_letter(self, batch: SpooledBatch, why: str) -> None:
        path = self._spool.dead_letter(batch, why)
        if path is None:
            logger.error(
                "batch %s vanished from the spool before it was dead-lettered", batch.batch_id
            )
            return
        spool = self._spool
        text = alarms.dead_letter_text(spool.dead_count, spool.dead_dir, path.name, why)
        self._alarms.raise_alarm(AlarmKind.DEAD_LETTER, text)

    def _watch_dead_letters(self) -> None:
        if not self._alarms.is_active(AlarmKind.DEAD_LETTER):
            return
        if time.monotonic() - self._dead_scanned_at < _IDLE_WAIT_S:
            return
        self._dead_scanned_at = time.monotonic()
        self._spool.rescan_dead()
        if not self._spool.dead_count:
            self._alarms.clear(AlarmKind.DEAD_LETTER, "the dead-letter folder is empty")

    def _announce_leftovers(self) -> None:
        if self._spool.pending_count:
            logger.info("found %d spooled batches; resending them", self._spool.pending_count)
        if self._spool.dead_count:
            text = alarms.leftover_dead_letters_text(self._spool.dead_count, self._spool.dead_dir)
            self._alarms.raise_alarm(AlarmKind.DEAD_LETTER, text)
