"""The retention job on a supervised thread, as ``broker serve`` runs it: one run at start and
then every ``interval_s``. A run that fails with a ``BrokerError`` (the database went away) is
logged and tried again next time; anything else is logged at CRITICAL and the thread restarts
(``broker.kit.supervise``). Runs that purged nothing are not audited, so an idle broker does not
fill its audit log; ``broker retention run`` always is."""

from __future__ import annotations

import logging

from broker.errors import BrokerError
from broker.kit.supervise import Periodic
from broker.retention.service import Retention, RunReport

logger = logging.getLogger(__name__)

ACTOR = "system:retention"


class RetentionLoop(Periodic):
    def __init__(self, retention: Retention, interval_s: float) -> None:
        self._retention = retention
        self.last: RunReport | None = None
        super().__init__("retention", self._once, interval_s, expected=(BrokerError,), log=logger)

    def _once(self) -> None:
        self.last = self._retention.run(ACTOR, audit_if_nothing=False)
        if self.last.total:
            logger.info("retention purged %s", self.last.counts)
