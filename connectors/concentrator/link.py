"""How the way to the MDMS fares: since when sending fails, how often in a row, when to try
again. The sender keeps it under the concentrator's lock; an outage is logged when it starts
and when it ends, not at every retry."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.concentrator.backoff import Backoff

logger = logging.getLogger(__name__)


@dataclass
class Link:
    backoff: Backoff
    failing_since: datetime | None = None
    attempt: int = 0
    retry_at: float = 0.0  # monotonic seconds
    last_error: str | None = None

    def next_backoff(self) -> float:
        """The backoff delay of this failure; the next one will be longer (up to the cap)."""
        delay = self.backoff.delay(self.attempt)
        self.attempt += 1
        return delay

    def trouble(self, detail: str, delay_s: float) -> None:
        """Sending failed: remember why, try again in ``delay_s``."""
        self.last_error = detail
        self.retry_at = time.monotonic() + delay_s
        if self.failing_since is None:
            self.failing_since = datetime.now(UTC)
            logger.warning("cannot deliver to the MDMS: %s; spooling and retrying", detail)

    def reachable(self) -> None:
        """The MDMS answered: the outage, if any, is over."""
        if self.failing_since is not None:
            logger.info("MDMS reachable again (failing since %s)", self.failing_since.isoformat())
        self.failing_since, self.attempt, self.retry_at = None, 0, 0.0

    def wait_s(self) -> float:
        return self.retry_at - time.monotonic()
