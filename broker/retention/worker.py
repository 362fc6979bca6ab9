"""The retention job on a supervised thread, as ``broker serve`` runs it: one run at start and
then every ``interval_s``. A run that fails with a ``BrokerError`` (the database went away) is
logged and tried again next time; anything else is logged at CRITICAL and the thread restarts
(``broker.kit.supervise``). Runs that purged nothing are not audited, so an idle broker does not
fill its audit log; ``broker retention run`` always is."""

from __future__ import annotations

import logging
import threading

from broker.errors import BrokerError
from broker.kit.supervise import Supervised
from broker.retention.service import Retention, RunReport

logger = logging.getLogger(__name__)

ACTOR = "system:retention"


class RetentionLoop:
    def __init__(self, retention: Retention, interval_s: float) -> None:
        self._retention = retention
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.last: RunReport | None = None
        self._worker = Supervised(
            "retention", self._run, base_s=min(interval_s, 60), cap_s=max(interval_s, 60)
        )

    @property
    def deaths(self) -> int:
        return self._worker.deaths

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self._retention.run(ACTOR, audit_if_nothing=False)
                if self.last.total:
                    logger.info("retention purged %s", self.last.counts)
            except BrokerError as exc:
                logger.warning("retention run failed: %s", exc)
            self._stop.wait(self._interval_s)

    def start(self) -> RetentionLoop:
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._worker.stop(timeout_s=30)
