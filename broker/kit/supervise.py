"""Supervised worker threads: a worker that dies is reported and started again, never lost.

A background thread that raises ends silently in Python: whatever it did (send batches, push
webhooks, refresh a CRL) simply stops while everything else looks healthy. ``Supervised`` runs a
worker's ``body`` on a daemon thread; when ``body`` raises, the death is logged at CRITICAL with
its traceback, counted, handed to ``on_death`` (so the owner can raise an alarm in its status),
and ``body`` is started again after an exponential backoff (``base_s`` doubling up to ``cap_s``;
a body that ran longer than ``cap_s`` before dying starts over at ``base_s``). ``body`` returning
normally ends the worker; so does ``stop``. ``Periodic`` runs a round every interval on such a
thread (the push worker and the retention job of ``broker serve``). Domain-free: the kit imports
nothing else of ours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Death:
    """One death of a worker: which, how often so far, and the exception (type and text)."""

    worker: str
    deaths: int
    error: str
    restart_in_s: float


class Supervised:
    """``body`` on a supervised daemon thread named ``name`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        body: Callable[[], None],
        *,
        on_death: Callable[[Death], None] | None = None,
        base_s: float = 0.1,
        cap_s: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.name = name
        self._body, self._on_death = body, on_death
        self._base_s, self._cap_s = base_s, cap_s
        self._log = log or logger
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deaths = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def deaths(self) -> int:
        """How many times the body raised (each followed by a restart unless stopped)."""
        with self._lock:
            return self._deaths

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> Supervised:
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the worker to end (the body must look at its own stop condition too)."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def stop(self, timeout_s: float | None = None) -> None:
        self.request_stop()
        self.join(timeout_s)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._body()
                return
            except Exception as exc:  # the point: no exception ends the worker silently
                if time.monotonic() - started > self._cap_s:
                    attempt = 0
                delay = min(self._cap_s, self._base_s * 2.0 ** min(attempt, 32))
                attempt += 1
                death = self._record(exc, delay)
                self._log.critical(
                    "worker %s died (%d so far): %s; restarting in %.3g s",
                    self.name,
                    death.deaths,
                    death.error,
                    delay,
                    exc_info=exc,
                )
                self._report(death)
                self._stop.wait(delay)

    def _record(self, exc: Exception, delay: float) -> Death:
        with self._lock:
            self._deaths += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            return Death(self.name, self._deaths, self._last_error, delay)

    def _report(self, death: Death) -> None:
        if self._on_death is None:
            return
        try:
            self._on_death(death)
        except Exception:  # a broken alarm hook must not end the supervision either
            self._log.exception("the death hook of worker %s failed", self.name)


class Periodic:
    """``work`` every ``interval_s`` on a supervised thread named ``name``, until ``stop``. An
    exception of ``expected`` (e.g. the database went away) is logged as a warning and the next
    round comes as usual; any other one is a death: logged at CRITICAL, and the thread restarts
    (``Supervised``, ``deaths`` counts them)."""

    def __init__(
        self,
        name: str,
        work: Callable[[], object],
        interval_s: float,
        *,
        expected: tuple[type[Exception], ...] = (),
        log: logging.Logger | None = None,
    ) -> None:
        self._work, self._interval_s, self._expected = work, interval_s, expected
        self._log = log or logger
        self._stop = threading.Event()
        backoff = min(interval_s, 60.0), max(interval_s, 60.0)
        self._worker = Supervised(name, self._run, base_s=backoff[0], cap_s=backoff[1], log=log)

    @property
    def deaths(self) -> int:
        return self._worker.deaths

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._work()
            except self._expected as exc:
                self._log.warning("%s round failed: %s", self._worker.name, exc)
            self._stop.wait(self._interval_s)

    def start(self) -> Self:
        self._worker.start()
        return self

    def stop(self, timeout_s: float = 30) -> None:
        self._stop.set()
        self._worker.stop(timeout_s)
